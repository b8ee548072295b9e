"""Zendesk: the contract, and Zendesk's own ways (per-account subdomain, upsert by external_id)."""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import pytest

from broker.connector import InvalidInput
from broker.testing import (
    BrokerHarness,
    ConnectorContract,
    ErrorCase,
    FakeProvider,
    IssuedTokens,
    standard_token_response,
)
from connectors.zendesk.connector import ZendeskConnector

SETTINGS = {"subdomain": "acme"}
TICKETS = "https://acme.zendesk.com/api/v2/tickets.json"
ONE_TICKET = r"https://acme\.zendesk\.com/api/v2/tickets/(?P<id>\d+)\.json"
ITEM = {
    "work_item": {
        "id": "W-9",
        "title": "Printer on fire",
        "status": "in_progress",
        "priority": "urgent",
        "due_date": "2025-08-01",
        "reporter": {"name": "Joan", "email": "joan@example.com"},
        "comments": [{"body": "Extinguisher located"}],
    },
    "author": {"name": "Ken"},
}


def zendesk_tokens(tokens: IssuedTokens) -> dict[str, Any]:
    body = standard_token_response(tokens)
    body["token_type"] = "bearer"
    body["refresh_token_expires_in"] = 2592000
    return body


class FakeZendesk:
    """Tickets kept by external_id, as Zendesk would."""

    def __init__(self, provider: FakeProvider) -> None:
        self.tickets: dict[str, dict[str, Any]] = {}
        provider.api("GET", TICKETS, self.search)
        provider.api("POST", TICKETS, self.create)
        provider.api("PUT", url__regex=ONE_TICKET, handler=self.update)

    def search(self, request: httpx.Request) -> httpx.Response:
        ext = request.url.params.get("external_id")
        found = [t for t in self.tickets.values() if t.get("external_id") == ext]
        return httpx.Response(200, json={"tickets": found, "count": len(found)})

    def create(self, request: httpx.Request) -> httpx.Response:
        ticket = {**json.loads(request.content)["ticket"], "id": 35436 + len(self.tickets)}
        self.tickets[str(ticket["id"])] = ticket
        return httpx.Response(201, json={"ticket": ticket}, headers={"ratelimit-remaining": "399"})

    def update(self, request: httpx.Request) -> httpx.Response:
        ticket_id = request.url.path.rsplit("/", 1)[1].removesuffix(".json")
        self.tickets[ticket_id].update(json.loads(request.content)["ticket"])
        return httpx.Response(200, json={"ticket": self.tickets[ticket_id]})


ZENDESK = {
    "token_response": zendesk_tokens,
    "unauthorized": lambda: httpx.Response(401, json={"error": "Couldn't authenticate you"}),
    "revoke_response": lambda active: httpx.Response(204),
}


class TestZendeskContract(ConnectorContract):
    connector = ZendeskConnector
    settings: ClassVar[dict[str, str]] = SETTINGS
    example_payload: ClassVar[dict[str, Any]] = ITEM
    error_cases: ClassVar[list[ErrorCase]] = [
        ErrorCase(
            422,
            {
                "error": "RecordInvalid",
                "description": "Record validation errors",
                "details": {"requester": [{"description": "Requester: Email is invalid"}]},
            },
            "RecordInvalid: Record validation errors (Requester: Email is invalid)",
        ),
        ErrorCase(
            403,
            {"error": "Forbidden", "description": "You do not have access to this page."},
            "You do not have access to this page.",
        ),
    ]

    def install_api(self, provider: FakeProvider) -> None:
        FakeZendesk(provider)

    def token_response(self, tokens: IssuedTokens) -> dict[str, Any]:
        return zendesk_tokens(tokens)

    def provider_options(self) -> dict[str, Any]:
        return {k: v for k, v in ZENDESK.items() if k != "token_response"}


@pytest.fixture
def zendesk(make_harness) -> tuple[BrokerHarness, FakeZendesk]:
    harness = make_harness(ZendeskConnector, settings=SETTINGS, **ZENDESK)
    return harness, FakeZendesk(harness.provider)


def test_first_update_creates_the_ticket_later_ones_update_it(zendesk) -> None:
    harness, fake = zendesk
    connection = harness.connect()
    first = harness.share(connection, ITEM)
    assert first["status"] == "delivered", first["reason"]
    assert first["destination"] == "acme.zendesk.com/api/v2/tickets.json"
    (ticket,) = fake.tickets.values()
    assert ticket["external_id"] == "W-9"
    assert ticket["requester"] == {"name": "Joan", "email": "joan@example.com"}
    assert ticket["status"] == "open" and ticket["priority"] == "urgent"
    assert ticket["comment"]["public"] is False
    again = {"work_item": {"id": "W-9", "title": "Printer on fire", "status": "done"}}
    second = harness.share(connection, again)
    assert second["status"] == "delivered", second["reason"]
    assert second["response_id"] == first["response_id"]
    assert len(fake.tickets) == 1
    assert fake.tickets[first["response_id"]]["status"] == "solved"
    methods = [r.method for r in harness.provider.requests]
    assert methods == ["GET", "POST", "GET", "PUT"]


def test_requester_email_is_sent_only_when_granted(zendesk) -> None:
    harness, fake = zendesk
    connection = harness.connect(optional=["user.content.comments"])
    assert harness.share(connection, ITEM)["status"] == "delivered"
    (ticket,) = fake.tickets.values()
    assert "requester" not in ticket
    assert "joan@example.com" not in json.dumps(ticket)


def test_the_subdomain_is_the_host_for_oauth_and_api(zendesk) -> None:
    harness, _fake = zendesk
    connection = harness.connect()
    hosts = {urlsplit(str(call.request.url)).hostname for call in harness.provider.router.calls}
    assert hosts == {"acme.zendesk.com"}
    assert harness.revoke(connection) == {"access_token": "revoked"}
    call = harness.provider.router.calls.last.request
    assert (call.method, call.url.path) == ("DELETE", "/api/v2/oauth/tokens/current.json")


@pytest.mark.parametrize("bad", ["Acme", "acme.evil.com", "evil.com/x", "", "-acme"])
def test_subdomain_is_validated_when_the_session_is_created(zendesk, bad: str) -> None:
    harness, _fake = zendesk
    with pytest.raises(InvalidInput) as info:
        harness.begin_connect("u1", settings={"subdomain": bad})
    assert info.value.details["field"] == "settings.subdomain"


def test_missing_subdomain_is_refused_naming_the_setting(zendesk) -> None:
    harness, _fake = zendesk
    with pytest.raises(InvalidInput, match=r"settings\.subdomain: is required"):
        harness.begin_connect("u1", settings={})
