"""Zendesk connector: one ticket per work item, matched by ``external_id``.

A delivery looks the ticket up (``GET /api/v2/tickets.json?external_id=…``),
then updates it (``PUT /api/v2/tickets/{id}.json``, the update as an internal
comment) or creates it (``POST /api/v2/tickets.json``). Zendesk's errors are
``{"error": "RecordInvalid", "description": "…", "details": {field: [{"description"}]}}``
(or a bare ``{"error": "Couldn't authenticate you"}``); rate limits are 429 with
``Retry-After``, which the broker honours.
"""

from __future__ import annotations

from typing import Any

import httpx

from broker.connector import (
    BoundAction,
    Connector,
    DeliveryRejected,
    DeliveryResult,
    packaged_manifest,
)

__all__ = ["ZendeskConnector", "zendesk_message"]

_STATUS = {"done": "solved", "closed": "closed", "in_progress": "open", "blocked": "hold"}
_PRIORITIES = frozenset({"low", "normal", "high", "urgent"})


def zendesk_message(resp: httpx.Response) -> str:
    """``HTTP 422: RecordInvalid: Record validation errors (Requester: Email is invalid)``."""
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {resp.status_code}"
    error = body.get("error")
    if isinstance(error, dict):  # {"error": {"title", "message"}} on some endpoints
        error = error.get("message") or error.get("title")
    parts = [str(p) for p in (error, body.get("description")) if p]
    details = [
        str(d.get("description"))
        for problems in (body.get("details") or {}).values()
        if isinstance(problems, list)
        for d in problems
        if isinstance(d, dict) and d.get("description")
    ]
    message = f"HTTP {resp.status_code}: {': '.join(parts) or 'error'}"
    return f"{message} ({'; '.join(details)})"[:500] if details else message[:500]


def _note(payload: dict[str, Any]) -> str:
    item = payload.get("work_item") or {}
    lines = [str(item.get("title") or item.get("id") or "Work item update")]
    for label, value in (
        ("Status", item.get("status")),
        ("Due", item.get("due_date")),
        ("Changed by", (payload.get("author") or {}).get("name")),
    ):
        if value:
            lines.append(f"{label}: {value}")
    comments = item.get("comments") or payload.get("comments") or []
    bodies = [str(c["body"]) for c in comments if isinstance(c, dict) and c.get("body")]
    if bodies:
        lines += ["", bodies[-1]]
    return "\n".join(lines)


def _ticket(payload: dict[str, Any]) -> dict[str, Any]:
    item = payload.get("work_item") or {}
    ticket: dict[str, Any] = {
        "subject": str(item.get("title") or item.get("id") or "Work item")[:150],
        "comment": {"body": _note(payload), "public": False},
    }
    status = _STATUS.get(str(item.get("status", "")).lower())
    if status:
        ticket["status"] = status
    priority = str(item.get("priority", "")).lower()
    if priority in _PRIORITIES:
        ticket["priority"] = priority
    if item.get("due_date"):
        ticket["type"] = "task"
        ticket["due_at"] = (
            f"{item['due_date']}T00:00:00Z"
            if len(str(item["due_date"])) == 10
            else item["due_date"]
        )
    return ticket


def _ok(resp: httpx.Response, *statuses: int) -> dict[str, Any]:
    if resp.status_code not in statuses:
        raise DeliveryRejected(zendesk_message(resp), details={"status": resp.status_code})
    body = resp.json()
    return body if isinstance(body, dict) else {}


class ZendeskConnector(Connector):
    MANIFEST = packaged_manifest("connectors.zendesk")

    def deliver(
        self, action: BoundAction, payload: dict[str, Any], client: httpx.Client
    ) -> DeliveryResult | None:
        item = payload.get("work_item") or {}
        external_id = item.get("id")
        ticket = _ticket(payload)
        existing = None
        if external_id is not None:
            found = _ok(client.get(action.url, params={"external_id": str(external_id)}), 200)
            existing = next(iter(found.get("tickets") or []), None)
        if existing is not None:
            url = action.url.replace("/tickets.json", f"/tickets/{int(existing['id'])}.json")
            body = _ok(client.put(url, json={"ticket": ticket}), 200)
        else:
            if external_id is not None:
                ticket["external_id"] = str(external_id)
            requester = {
                "name": (item.get("reporter") or {}).get("name"),
                "email": (item.get("reporter") or {}).get("email"),
            }
            if requester["email"]:
                ticket["requester"] = {k: v for k, v in requester.items() if v}
            body = _ok(client.post(action.url, json={"ticket": ticket}), 201)
        return DeliveryResult(response_id=str((body.get("ticket") or {}).get("id")))
