"""Slack connector: a work item update as a ``chat.postMessage`` with blocks.

Slack's Web API answers HTTP 200 with ``{"ok": false, "error": "..."}`` for most
errors, so a 200 is not a delivery: this connector reads ``ok``. An expired or
invalid token (``token_expired``, ``invalid_auth``) is reported to the broker as
:class:`TokenRejected` (it refreshes when the app uses token rotation); any other
``error`` fails the transfer with Slack's error code. Rate limits come as HTTP
429 with ``Retry-After``, which the broker honours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from broker.connector import (
    BoundAction,
    Connector,
    DeliveryRejected,
    DeliveryResult,
    TokenRejected,
    packaged_manifest,
    provider_message,
)

__all__ = ["SlackConnector", "render_update"]

AUTH_TEST = "https://slack.com/api/auth.test"
_TOKEN_ERRORS = frozenset({"token_expired", "invalid_auth", "not_authed"})
_TEXT_LIMIT = 3000  # a section block's text limit


def _escape(text: object) -> str:
    """Slack mrkdwn: &, < and > must be escaped; nothing else is."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _latest_comment(payload: Mapping[str, Any]) -> str | None:
    item = payload.get("work_item") or {}
    comments = item.get("comments") or payload.get("comments") or []
    if isinstance(comments, dict):
        comments = [comments]
    bodies = [c.get("body") for c in comments if isinstance(c, dict) and c.get("body")]
    return str(bodies[-1]) if bodies else None


def render_update(payload: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the blocks for one update (only granted fields appear)."""
    item = payload.get("work_item") or {}
    title = _escape(item.get("title") or item.get("id") or "A work item")
    heading = f"*<{item['url']}|{title}>*" if item.get("url") else f"*{title}*"
    if item.get("id") and item.get("title"):
        heading += f" ({_escape(item['id'])})"
    facts = []
    for label, value in (
        ("Status", item.get("status")),
        ("Due", item.get("due_date")),
        ("Assignee", (item.get("assignee") or {}).get("name")),
        ("Changed by", (payload.get("author") or {}).get("name")),
    ):
        if value:
            facts.append({"type": "mrkdwn", "text": f"*{label}*\n{_escape(value)}"})
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": heading[:_TEXT_LIMIT]}}
    ]
    if facts:
        blocks.append({"type": "section", "fields": facts[:10]})
    comment = _latest_comment(payload)
    if comment:
        quote = "> " + _escape(comment).replace("\n", "\n> ")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": quote[:_TEXT_LIMIT]}})
    return heading, blocks


def _slack_answer(resp: httpx.Response) -> dict[str, Any]:
    """Slack's JSON answer, or a rejection naming what went wrong."""
    try:
        body = resp.json()
    except ValueError:
        raise DeliveryRejected(
            provider_message(resp), details={"status": resp.status_code}
        ) from None
    if resp.status_code != 200 or not isinstance(body, dict):
        raise DeliveryRejected(provider_message(resp), details={"status": resp.status_code})
    if body.get("ok") is not True:
        error = str(body.get("error") or "unknown_error")
        if error in _TOKEN_ERRORS:
            raise TokenRejected(f"Slack: {error}")
        raise DeliveryRejected(f"Slack refused the message: {error}", details={"error": error})
    return body


class SlackConnector(Connector):
    MANIFEST = packaged_manifest("connectors.slack")

    def deliver(
        self, action: BoundAction, payload: dict[str, Any], client: httpx.Client
    ) -> DeliveryResult | None:
        text, blocks = render_update(payload)
        message = {
            "channel": action.settings["channel"],
            "text": text,
            "blocks": blocks,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        resp = client.post(
            action.url,
            json=message,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        body = _slack_answer(resp)
        return DeliveryResult(response_id=f"{body.get('channel')}/{body.get('ts')}")

    def check_connection(self, client: httpx.Client, settings: Mapping[str, str]) -> None:
        """``auth.test``: the new token works for this workspace."""
        _slack_answer(client.post(AUTH_TEST))
