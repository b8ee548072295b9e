"""The broker's first real connectors, one package each, published through the
``broker.connectors`` entry-point group of this distribution."""
