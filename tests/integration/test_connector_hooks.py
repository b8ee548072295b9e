"""The connection hooks: before_revoke runs with the token before revocation; a failing
or over-reaching hook is recorded, and revocation goes on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import httpx

from broker.core.catalog import default_catalog
from broker.core.connector import Connector
from broker.core.manifest import parse_manifest
from broker.demo import sandbox_manifest

SANDBOX = "https://sandbox.example.com"
WEBHOOK = f"{SANDBOX}/api/webhooks/1"


def manifest():
    return parse_manifest(sandbox_manifest(SANDBOX), default_catalog(), source="test")


class CleansUp(Connector):
    calls: ClassVar[list[dict[str, str]]] = []

    def before_revoke(self, client: httpx.Client, settings: Mapping[str, str]) -> None:
        resp = client.delete(WEBHOOK)
        self.calls.append(
            {"status": str(resp.status_code), "auth": str("authorization" in resp.request.headers)}
        )


class Overreaches(Connector):
    def before_revoke(self, client: httpx.Client, settings: Mapping[str, str]) -> None:
        client.delete("https://elsewhere.example.net/hook")


def test_before_revoke_runs_with_the_token_then_tokens_are_revoked(make_harness) -> None:
    CleansUp.calls.clear()
    harness = make_harness(CleansUp(manifest()))
    harness.provider.api("DELETE", WEBHOOK, httpx.Response(204))
    connection = harness.connect()
    result = harness.revoke(connection)
    assert CleansUp.calls == [{"status": "204", "auth": "False"}], "authorized, token not shown"
    webhook_call = harness.provider.requests[-1]
    assert webhook_call.headers["authorization"].startswith("Bearer fake-at-")
    assert result == {"refresh_token": "revoked", "access_token": "revoked"}


def test_a_hook_that_reaches_elsewhere_is_recorded_and_revocation_goes_on(make_harness) -> None:
    harness = make_harness(Overreaches(manifest()))
    connection = harness.connect()
    result = harness.revoke(connection)
    assert result["before_revoke"].startswith("failed: EgressDenied")
    assert "elsewhere.example.net" in result["before_revoke"]
    assert result["refresh_token"] == "revoked"
    assert not any(harness.provider.access_tokens.values())
