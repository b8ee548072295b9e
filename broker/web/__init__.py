"""The HTTP surface: a thin FastAPI layer over broker.flows."""
