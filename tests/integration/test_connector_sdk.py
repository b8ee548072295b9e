"""Connector SDK through the HTTP API: settings at connect, hooks that fail, other
connectors unaffected, and what GET /v1/connectors shows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from broker.core.catalog import default_catalog
from broker.core.connector import BoundAction, Connector
from broker.demo import sandbox_manifest
from broker.flows.keys import create_api_key
from broker.store.models import Connection
from broker.testing import BrokerHarness, FakeProvider, load_connector
from broker.web.app import create_app
from connectors.zendesk.connector import ZendeskConnector

WORK = {"work_item": {"id": "W-1", "title": "Ship it"}}


class Crashing(Connector):
    def deliver(self, action: BoundAction, payload: dict[str, Any], client: httpx.Client) -> None:
        raise RuntimeError("bug in the plugin")


def crashing() -> Connector:
    from broker.core.manifest import parse_manifest

    raw = sandbox_manifest("https://crash.example.com")
    raw["id"], raw["name"] = "crashy", "Crashy"
    raw["oauth"] = {
        **raw["oauth"],
        "client_id": "env:CRASHY_ID",
        "client_secret": "env:CRASHY_SECRET",
    }
    return Crashing(parse_manifest(raw, default_catalog(), source="test"))


@pytest.fixture
def broker(database_url: str) -> Iterator[tuple[BrokerHarness, TestClient, dict[str, str]]]:
    zendesk = load_connector(ZendeskConnector)
    zendesk_fake = FakeProvider(zendesk.manifest, settings={"subdomain": "acme"})
    zendesk_fake.api("GET", "https://acme.zendesk.com/api/v2/tickets.json", {"tickets": []})
    zendesk_fake.api(
        "POST",
        "https://acme.zendesk.com/api/v2/tickets.json",
        httpx.Response(201, json={"ticket": {"id": 7}}),
    )
    crash = crashing()
    with BrokerHarness(
        crash,
        FakeProvider(crash.manifest),
        others=[(zendesk, zendesk_fake)],
        database_url=database_url,  # PostgreSQL too, when BROKER_TEST_DATABASE_URL is set
    ) as h:
        _, key = create_api_key(h.rt.engine, role="admin")
        with TestClient(create_app(h.rt)) as client:
            yield h, client, {"Authorization": f"Bearer {key}"}


def test_settings_are_validated_at_connect_session_creation(broker) -> None:
    _h, client, auth = broker
    bad = client.post(
        "/v1/connect-sessions",
        json={"user_id": "u1", "connector": "zendesk", "settings": {"subdomain": "evil.com/x"}},
        headers=auth,
    )
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["details"]["field"] == "settings.subdomain"
    assert "Zendesk subdomain" in error["message"]
    missing = client.post(
        "/v1/connect-sessions", json={"user_id": "u1", "connector": "zendesk"}, headers=auth
    )
    assert missing.status_code == 422
    assert missing.json()["error"]["details"]["field"] == "settings.subdomain"
    without_connector = client.post(
        "/v1/connect-sessions",
        json={"user_id": "u1", "settings": {"subdomain": "acme"}},
        headers=auth,
    )
    assert without_connector.status_code == 422
    ok = client.post(
        "/v1/connect-sessions",
        json={"user_id": "u1", "connector": "zendesk", "settings": {"subdomain": "acme"}},
        headers=auth,
    )
    assert ok.status_code == 201, ok.text


def test_settings_travel_in_the_session_and_cannot_be_changed(broker) -> None:
    _h, client, auth = broker
    issued = client.post(
        "/v1/connect-sessions",
        json={"user_id": "u1", "connector": "zendesk", "settings": {"subdomain": "acme"}},
        headers=auth,
    ).json()
    token = parse_qs(urlsplit(issued["url"]).query)["session"][0]
    tampered = token.rsplit(".", 1)[0] + ".eyJzdWJkb21haW4iOiJldmlsIn0"  # {"subdomain":"evil"}
    page = client.get(f"/connect/zendesk?session={tampered}")
    assert page.status_code == 400
    assert client.get(f"/connect/zendesk?session={token}").status_code == 200


def test_a_crashing_connector_fails_its_transfer_cleanly_and_others_keep_working(broker) -> None:
    h, client, auth = broker
    crashy = h.connect(connector_id="crashy")
    zendesk = h.connect(connector_id="zendesk")
    resp = client.post(
        f"/v1/connections/{crashy}/transfers",
        json={"action": "post_message", "data": WORK},
        headers=auth,
    )
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["code"] == "delivery_failed"
    assert error["details"]["transfer"]["status"] == "failed"
    assert error["details"]["transfer"]["reason"] == "connector_error (RuntimeError)"
    assert "bug in the plugin" not in resp.text
    assert "Traceback" not in resp.text
    ok = client.post(
        f"/v1/connections/{zendesk}/transfers",
        json={"action": "upsert_ticket", "data": WORK},
        headers=auth,
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["destination"] == "acme.zendesk.com/api/v2/tickets.json"
    assert ok.json()["response_id"] == "7"
    stored = client.get(f"/v1/connections/{zendesk}", headers=auth)
    assert stored.status_code == 200
    with Session(h.rt.engine) as db:
        row = db.get(Connection, zendesk)
        assert row is not None and row.settings == {"subdomain": "acme"}


def test_connector_detail_shows_settings_hosts_and_delivery_kind(broker) -> None:
    _h, client, auth = broker
    detail = client.get("/v1/connectors/zendesk", headers=auth).json()
    assert detail["delivery"] == "python"
    assert [s["name"] for s in detail["settings"]] == ["subdomain"]
    assert detail["hosts"] == ["{subdomain}.zendesk.com"]
    assert detail["revocable"] is True
