"""The test kit's contract, run on a manifest-only connector, and proven able to fail."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import pytest

from broker.core.catalog import default_catalog
from broker.core.connector import BoundAction, Connector, DeliveryResult
from broker.testing import ConnectorContract, ErrorCase

SANDBOX = "https://sandbox.example.com"
PAYLOAD = {
    "work_item": {"id": "W-42", "title": "Fix login", "assignee": {"email": "ada@example.com"}},
    "author": {"name": "Ada"},
    "ip_address": "10.0.0.1",
}


def sandbox() -> Connector:
    from broker.demo import sandbox_connector

    return sandbox_connector(default_catalog(), SANDBOX)


class TestManifestOnlyContract(ConnectorContract):
    connector = sandbox()
    example_payload: ClassVar[dict[str, Any]] = PAYLOAD
    error_cases: ClassVar[list[ErrorCase]] = [
        ErrorCase(422, {"error_description": "channel is archived"}, "channel is archived"),
        ErrorCase(403, {"message": "app not installed"}, "app not installed"),
    ]


# --- the contract can fail: connectors that leak ---------------------------------------

LEAK_ENV = "BROKER_TEST_LEAKY_SECRET"


class RememberingConnector(Connector):
    """Sends, with each update, what it kept from the previous one (another user's)."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def deliver(
        self, action: BoundAction, payload: dict[str, Any], client: httpx.Client
    ) -> DeliveryResult | None:
        previous = self.seen[-1] if self.seen else {}
        self.seen.append(payload)
        resp = client.post(action.url, json={"update": payload, "previous": previous})
        resp.raise_for_status()
        return DeliveryResult(response_id=str(resp.json()["id"]))


class EnvironmentConnector(Connector):
    """Adds a value from the broker's environment in a header."""

    def deliver(
        self, action: BoundAction, payload: dict[str, Any], client: httpx.Client
    ) -> DeliveryResult | None:
        import os

        resp = client.post(action.url, json=payload, headers={"X-Trace": os.environ[LEAK_ENV]})
        resp.raise_for_status()
        return None


class HonestConnector(Connector):
    """Reshapes the payload with constants of its own: allowed."""

    def deliver(
        self, action: BoundAction, payload: dict[str, Any], client: httpx.Client
    ) -> DeliveryResult | None:
        item = payload.get("work_item", {})
        text = f"Update on {item.get('id')}: {item.get('title', 'untitled')}"
        resp = client.post(action.url, params={"format": "markdown"}, json={"text": text[:12]})
        resp.raise_for_status()
        return None


def contract_for(cls: type[Connector]) -> ConnectorContract:
    class Contract(ConnectorContract):
        connector = cls(sandbox().manifest)
        example_payload: ClassVar[dict[str, Any]] = PAYLOAD

    return Contract()


def sample(n: int) -> dict[str, Any]:
    return {
        "work_item": {"id": f"v{n}xid", "title": f"v{n + 1}xtitle"},
        "author": {"name": f"v{n + 2}xn"},
    }


GRANT = {"user.content.work_items", "user.name"}


def test_contract_catches_a_connector_that_remembers_other_payloads() -> None:
    RememberingConnector.seen.clear()
    contract = contract_for(RememberingConnector)
    contract.check_sends_only_what_was_granted(sample(0), GRANT)  # nothing to remember yet
    with pytest.raises(AssertionError) as info:
        contract.check_sends_only_what_was_granted(sample(10), GRANT)
    # (no literal of the leaked values here: this file is the leaky connector's source,
    # so its words count as the connector's constants)
    message = str(info.value)
    assert "body.previous.author.name" in message
    assert "neither in the granted payload nor a constant" in message


def test_contract_catches_a_value_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets

    leaked = secrets.token_hex(8)
    monkeypatch.setenv(LEAK_ENV, leaked)
    with pytest.raises(AssertionError, match=leaked):
        contract_for(EnvironmentConnector).check_sends_only_what_was_granted(sample(0), GRANT)


def test_contract_passes_a_connector_that_only_reshapes_and_truncates() -> None:
    contract_for(HonestConnector).check_sends_only_what_was_granted(sample(0), GRANT)


def test_property_run_of_the_contract_fails_for_a_leaky_connector() -> None:
    """The hypothesis test itself (not only the check) fails on the second example."""
    from hypothesis import Phase, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import FlakyFailure

    RememberingConnector.seen.clear()
    contract = contract_for(RememberingConnector)
    inner = type(contract).test_sends_only_what_was_granted.hypothesis.inner_test
    quick = settings(phases=[Phase.generate], max_examples=10, database=None, deadline=None)
    test = given(data=st.data())(quick(inner))
    # A leak that depends on history is also "flaky" to hypothesis: either way, it fails.
    with pytest.raises((AssertionError, FlakyFailure)) as info:
        test(contract)
    errors = info.value.exceptions if isinstance(info.value, FlakyFailure) else [info.value]
    assert any("neither in the granted payload" in str(e) for e in errors)
