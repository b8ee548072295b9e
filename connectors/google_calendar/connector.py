"""Google Calendar connector: one all-day event per work item's due date.

The event carries the work item's id in a private extended property, so a later
update finds it (``events.list?privateExtendedProperty=workItemId=…``) and
patches it instead of adding a second one. An all-day event ends the day after
it starts (``end.date`` is exclusive), the one value this connector computes.
Errors are ``{"error": {"code", "message", "errors": [{"reason"}], "status"}}``;
Google's rate limits come as 403 ``rateLimitExceeded``/``userRateLimitExceeded``
(or 429), retried with backoff as Google asks.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import httpx

from broker.connector import (
    BoundAction,
    Connector,
    DeliveryRejected,
    DeliveryResult,
    InvalidInput,
    packaged_manifest,
)

__all__ = ["GoogleCalendarConnector", "google_message", "next_day"]

PROPERTY = "workItemId"
_RATE_LIMITS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


def next_day(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def _reasons(resp: httpx.Response) -> tuple[str | None, list[str]]:
    try:
        error = resp.json().get("error")
    except (ValueError, AttributeError):
        return None, []
    if not isinstance(error, dict):
        return (error if isinstance(error, str) else None), []
    reasons = [e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)]
    return error.get("message"), [r for r in reasons if isinstance(r, str)]


def google_message(resp: httpx.Response) -> str:
    """``HTTP 404: Not Found (notFound)``."""
    message, reasons = _reasons(resp)
    text = f"HTTP {resp.status_code}: {message}" if message else f"HTTP {resp.status_code}"
    return f"{text} ({', '.join(reasons)})"[:500] if reasons else text[:500]


def _event(item: dict[str, Any], due: str) -> dict[str, Any]:
    title = str(item.get("title") or item.get("id") or "Work item")
    event: dict[str, Any] = {
        "summary": f"Due: {title}"[:1024],
        "start": {"date": due},
        "end": {"date": next_day(due)},
        "transparency": "transparent",
        "extendedProperties": {"private": {PROPERTY: str(item.get("id", ""))}},
    }
    lines = [f"{label}: {item[key]}" for label, key in (("Status", "status"),) if item.get(key)]
    if item.get("url"):
        lines.append(str(item["url"]))
        event["source"] = {"title": title[:100], "url": str(item["url"])}
    if lines:
        event["description"] = "\n".join(lines)
    return event


def _ok(resp: httpx.Response, *statuses: int) -> dict[str, Any]:
    if resp.status_code not in statuses:
        raise DeliveryRejected(google_message(resp), details={"status": resp.status_code})
    body = resp.json()
    return body if isinstance(body, dict) else {}


class GoogleCalendarConnector(Connector):
    MANIFEST = packaged_manifest("connectors.google_calendar")

    def deliver(
        self, action: BoundAction, payload: dict[str, Any], client: httpx.Client
    ) -> DeliveryResult | None:
        item = payload.get("work_item") or {}
        due = str(item.get("due_date") or "")[:10]
        try:
            date.fromisoformat(due)
        except ValueError:
            raise InvalidInput("Google Calendar needs work_item.due_date as YYYY-MM-DD") from None
        event = _event(item, due)
        existing = None
        if item.get("id") is not None:
            query = {"privateExtendedProperty": f"{PROPERTY}={item['id']}", "maxResults": "1"}
            found = _ok(client.get(action.url, params=query), 200)
            existing = next(iter(found.get("items") or []), None)
        if existing is not None:
            resp = client.patch(f"{action.url}/{existing['id']}", json=event)
            body = _ok(resp, 200)
        else:
            body = _ok(client.post(action.url, json=event), 200)
        return DeliveryResult(response_id=str(body.get("id")))

    def retry_delay(self, response: httpx.Response, now: datetime) -> float | None:
        """Google's 403 rate limits: retry with the broker's backoff."""
        if response.status_code == 403 and _RATE_LIMITS & set(_reasons(response)[1]):
            return 0.0
        return None
