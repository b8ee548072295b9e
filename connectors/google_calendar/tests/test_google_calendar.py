"""Google Calendar: the contract, and Google's own ways (offline access, refresh,
revocation, 403 rate limits)."""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from broker.testing import BrokerHarness, ConnectorContract, ErrorCase, FakeProvider, IssuedTokens
from connectors.google_calendar.connector import GoogleCalendarConnector, next_day

EVENTS = "https://www.googleapis.com/calendar/v3/calendars/primary/events"
ONE_EVENT = r"https://www\.googleapis\.com/calendar/v3/calendars/primary/events/(?P<id>[a-v0-9]+)"
ITEM = {
    "work_item": {
        "id": "W-3",
        "title": "Quarterly report",
        "status": "open",
        "due_date": "2025-10-15",
        "url": "https://app.example.com/w/3",
        "assignee": {"name": "Hedy", "email": "hedy@example.com"},
    },
    "author": {"name": "Alan"},
}


def google_tokens(tokens: IssuedTokens) -> dict[str, Any]:
    """oauth2.googleapis.com/token: a refresh token only with access_type=offline, and
    none on a refresh (Google keeps the old one)."""
    body: dict[str, Any] = {
        "access_token": tokens.access_token,
        "expires_in": 3599,
        "scope": "https://www.googleapis.com/auth/calendar.events",
        "token_type": "Bearer",
    }
    if tokens.refresh_token:
        body["refresh_token"] = tokens.refresh_token
    return body


def google_error(code: int, status: str, message: str, reason: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"domain": "global", "reason": reason, "message": message}],
            "status": status,
        }
    }


class FakeCalendar:
    def __init__(self, provider: FakeProvider) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        provider.api("GET", EVENTS, self.list)
        provider.api("POST", EVENTS, self.insert)
        provider.api("PATCH", url__regex=ONE_EVENT, handler=self.patch)

    def list(self, request: httpx.Request) -> httpx.Response:
        key, _, value = request.url.params.get("privateExtendedProperty", "").partition("=")
        items = [
            e for e in self.events.values() if e["extendedProperties"]["private"].get(key) == value
        ]
        return httpx.Response(200, json={"kind": "calendar#events", "items": items})

    def insert(self, request: httpx.Request) -> httpx.Response:
        event = {**json.loads(request.content), "id": f"ev{len(self.events)}abc"}
        self.events[event["id"]] = event
        return httpx.Response(200, json=event)

    def patch(self, request: httpx.Request) -> httpx.Response:
        event_id = request.url.path.rsplit("/", 1)[1]
        self.events[event_id].update(json.loads(request.content))
        return httpx.Response(200, json=self.events[event_id])


def google_revoke(active: bool) -> httpx.Response:
    if active:
        return httpx.Response(200, json={})
    return httpx.Response(
        400, json={"error": "invalid_token", "error_description": "Token expired or revoked"}
    )


GOOGLE = {
    "token_response": google_tokens,
    "rotate_refresh_tokens": False,
    "expires_in": 3599,
    "unauthorized": lambda: httpx.Response(
        401, json=google_error(401, "UNAUTHENTICATED", "Invalid Credentials", "authError")
    ),
    "revoke_response": google_revoke,
}


class TestGoogleCalendarContract(ConnectorContract):
    connector = GoogleCalendarConnector
    settings: ClassVar[dict[str, str]] = {"calendar_id": "primary"}
    example_payload: ClassVar[dict[str, Any]] = ITEM
    error_cases: ClassVar[list[ErrorCase]] = [
        ErrorCase(404, google_error(404, "NOT_FOUND", "Not Found", "notFound"), "Not Found"),
        ErrorCase(
            403,
            google_error(403, "PERMISSION_DENIED", "Forbidden", "forbidden"),
            "HTTP 403: Forbidden (forbidden)",
        ),
    ]

    def install_api(self, provider: FakeProvider) -> None:
        FakeCalendar(provider)

    def token_response(self, tokens: IssuedTokens) -> dict[str, Any]:
        return google_tokens(tokens)

    def provider_options(self) -> dict[str, Any]:
        return {k: v for k, v in GOOGLE.items() if k != "token_response"}

    def derived_values(self, granted: dict[str, Any]) -> list[str]:
        due = (granted.get("work_item") or {}).get("due_date")
        return [next_day(due)] if due else []


@pytest.fixture
def google(make_harness) -> tuple[BrokerHarness, FakeCalendar]:
    harness = make_harness(GoogleCalendarConnector, **GOOGLE)  # calendar_id defaults
    return harness, FakeCalendar(harness.provider)


def test_due_date_becomes_an_all_day_event_and_moves_with_it(google) -> None:
    harness, fake = google
    connection = harness.connect()
    first = harness.share(connection, ITEM)
    assert first["status"] == "delivered", first["reason"]
    (event,) = fake.events.values()
    assert event["start"] == {"date": "2025-10-15"}
    assert event["end"] == {"date": "2025-10-16"}, "end.date is exclusive"
    assert event["summary"] == "Due: Quarterly report"
    assert "Hedy" not in json.dumps(event), "names are not declared"
    moved = {"work_item": {"id": "W-3", "title": "Quarterly report", "due_date": "2025-12-31"}}
    second = harness.share(connection, moved)
    assert second["status"] == "delivered"
    assert second["response_id"] == first["response_id"]
    assert len(fake.events) == 1
    assert fake.events[first["response_id"]]["end"] == {"date": "2026-01-01"}


def test_authorize_asks_for_offline_access_and_the_default_calendar_is_primary(google) -> None:
    harness, _fake = google
    connection = harness.connect()
    stored = harness.stored(connection)
    assert stored.has_refresh_token, "offline access gave a refresh token"
    assert stored.settings == {"calendar_id": "primary"}
    first_call = harness.provider.router.calls[0].request
    assert first_call.url.host == "oauth2.googleapis.com"


def test_authorize_url_has_googles_parameters(google) -> None:
    harness, _fake = google
    seen: list[str] = []
    authorize = harness.provider.authorize
    harness.provider.authorize = lambda url, **kw: seen.append(url) or authorize(url, **kw)
    harness.connect()
    query = {k: v[0] for k, v in parse_qs(urlsplit(seen[0]).query).items()}
    assert query["access_type"] == "offline"
    assert query["prompt"] == "consent"
    assert query["scope"] == "https://www.googleapis.com/auth/calendar.events"
    assert query["code_challenge_method"] == "S256"


def test_expired_token_is_refreshed_and_the_refresh_token_kept(google) -> None:
    harness, _fake = google
    connection = harness.connect()
    harness.provider.expire_access_tokens()
    transfer = harness.share(connection, ITEM)
    assert transfer["status"] == "delivered", transfer["reason"]
    assert [a.get("status") for a in transfer["attempts"]][:2] == [401, 200]
    assert harness.provider.token_requests.count("refresh_token") == 1
    assert any(harness.provider.refresh_tokens.values()), "Google keeps the refresh token"


def test_403_rate_limit_is_retried_but_403_forbidden_is_not(google) -> None:
    harness, _fake = google
    connection = harness.connect()
    limited = httpx.Response(
        403, json=google_error(403, "PERMISSION_DENIED", "Rate Limit Exceeded", "rateLimitExceeded")
    )
    answers = iter([limited])
    harness.provider.api(
        "GET", EVENTS, lambda r: next(answers, None) or httpx.Response(200, json={"items": []})
    )
    transfer = harness.share(connection, ITEM)
    assert transfer["status"] == "delivered", transfer["reason"]
    assert [a.get("status") for a in transfer["attempts"]][:2] == [403, 200]


def test_missing_due_date_fails_with_a_clear_reason(google) -> None:
    harness, _fake = google
    connection = harness.connect()
    transfer = harness.share(connection, {"work_item": {"id": "W-4", "title": "No date"}})
    assert transfer["status"] == "failed"
    assert transfer["reason"] == "Google Calendar needs work_item.due_date as YYYY-MM-DD"


def test_revoking_the_refresh_token_ends_the_grant(google) -> None:
    harness, _fake = google
    connection = harness.connect()
    result = harness.revoke(connection)
    assert result == {"refresh_token": "revoked", "access_token": "already invalid"}
    assert not any(harness.provider.access_tokens.values())
    assert not any(harness.provider.refresh_tokens.values())
