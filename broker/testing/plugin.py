"""pytest plugin (entry point ``pytest11: broker``): fixtures for connector tests.

Loaded in every pytest run where the broker is installed, so it imports nothing
but pytest at import time; the kit itself is imported when a fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

__all__ = ["make_harness"]


@pytest.fixture
def make_harness() -> Iterator[Callable[..., Any]]:
    """``make_harness(connector, settings={...}, **fake_provider_options)`` -> a
    :class:`broker.testing.BrokerHarness` (closed after the test)."""
    from broker.testing import BrokerHarness, load_connector

    made: list[Any] = []

    def make(connector: Any, *, settings: dict[str, str] | None = None, **options: Any) -> Any:
        harness = BrokerHarness.for_connector(
            load_connector(connector), settings=settings, **options
        )
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()
