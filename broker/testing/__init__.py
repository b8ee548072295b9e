"""The connector test kit: a fake provider on respx, a real broker around it, and the
contract every connector passes. Needs the ``test`` extras (pytest, hypothesis, respx).

Importing this package imports nothing else: each name is loaded on first use, so
the pytest plugin (``broker.testing.plugin``, registered through the ``pytest11``
entry point) costs nothing, and breaks nothing, where the extras are not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BrokerHarness",
    "ConnectorContract",
    "ErrorCase",
    "FakeProvider",
    "IssuedTokens",
    "StoredConnection",
    "load_connector",
    "payload_strategy",
    "request_atoms",
    "standard_token_response",
    "unexplained",
]

_HOME = {
    "BrokerHarness": "harness",
    "ConnectorContract": "contract",
    "ErrorCase": "contract",
    "FakeProvider": "fake_provider",
    "IssuedTokens": "fake_provider",
    "StoredConnection": "harness",
    "load_connector": "contract",
    "payload_strategy": "leaks",
    "request_atoms": "leaks",
    "standard_token_response": "fake_provider",
    "unexplained": "leaks",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'broker.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"broker.testing.{module}"), name)
