"""GitHub connector: ``POST /repos/{owner}/{repo}/issues`` and issue comments.

Every request carries GitHub's recommended ``Accept: application/vnd.github+json``
and ``X-GitHub-Api-Version``. GitHub answers a rate limit with 403 *or* 429:
the primary limit with ``x-ratelimit-remaining: 0`` (wait until
``x-ratelimit-reset``), a secondary limit with ``retry-after`` or, failing that,
a message saying so (wait at least a minute). :meth:`GitHubConnector.retry_delay`
tells the broker which 403s are rate limits; any other 403 is a refusal.
Errors are ``{"message", "errors": [...], "documentation_url"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
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

__all__ = ["GitHubConnector", "github_message", "issue_body"]

API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
SECONDARY_LIMIT_WAIT = 60.0
_TITLE_LIMIT = 256


def github_message(resp: httpx.Response) -> str:
    """``HTTP 422: Validation Failed (title: missing_field)`` from GitHub's error JSON."""
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {resp.status_code}"
    message = f"HTTP {resp.status_code}: {str(body.get('message') or 'error')[:300]}"
    details = []
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            field = error.get("field") or error.get("resource") or ""
            details.append(f"{field}: {error.get('message') or error.get('code')}".strip(": "))
        elif isinstance(error, str):
            details.append(error)
    return f"{message} ({'; '.join(details)[:300]})" if details else message


def issue_body(payload: Mapping[str, Any]) -> str:
    """The issue's Markdown body: only what was granted."""
    item = payload.get("work_item") or {}
    lines = []
    if item.get("description"):
        lines += [str(item["description"]), ""]
    for label, value in (
        ("Work item", item.get("id")),
        ("Status", item.get("status")),
        ("Due", item.get("due_date")),
        ("Assignee", (item.get("assignee") or {}).get("name")),
        ("Changed by", (payload.get("author") or {}).get("name")),
        ("Link", item.get("url")),
    ):
        if value:
            lines.append(f"- **{label}:** {value}")
    return "\n".join(lines) or "(no details shared)"


def _comment_text(payload: Mapping[str, Any]) -> str:
    item = payload.get("work_item") or {}
    comments = item.get("comments") or payload.get("comments") or []
    bodies = [str(c["body"]) for c in comments if isinstance(c, dict) and c.get("body")]
    return "\n\n---\n\n".join(bodies) if bodies else issue_body(payload)


def _answer(resp: httpx.Response, key: str) -> DeliveryResult:
    if resp.status_code == 201:
        body = resp.json()
        return DeliveryResult(response_id=str(body.get(key)))
    raise DeliveryRejected(github_message(resp), details={"status": resp.status_code})


class GitHubConnector(Connector):
    MANIFEST = packaged_manifest("connectors.github")

    def deliver(
        self, action: BoundAction, payload: dict[str, Any], client: httpx.Client
    ) -> DeliveryResult | None:
        item = payload.get("work_item") or {}
        if action.name == "comment":
            number = item.get("issue_number")
            if not isinstance(number, int) or isinstance(number, bool) or number < 1:
                raise InvalidInput(
                    "the comment action needs work_item.issue_number (the create_issue "
                    "transfer's response_id)"
                )
            resp = client.post(
                f"{action.url}/{number}/comments",
                json={"body": _comment_text(payload)},
                headers=API_HEADERS,
            )
            return _answer(resp, "id")
        title = str(item.get("title") or item.get("id") or "Work item")[:_TITLE_LIMIT]
        resp = client.post(
            action.url, json={"title": title, "body": issue_body(payload)}, headers=API_HEADERS
        )
        return _answer(resp, "number")

    def retry_delay(self, response: httpx.Response, now: datetime) -> float | None:
        if response.status_code not in (403, 429):
            return None
        retry_after = response.headers.get("retry-after", "")
        if retry_after.isdigit():
            return float(retry_after)
        if response.headers.get("x-ratelimit-remaining") == "0":
            reset = response.headers.get("x-ratelimit-reset", "")
            if reset.isdigit():
                return max(0.0, int(reset) - now.timestamp())
            return SECONDARY_LIMIT_WAIT
        if "rate limit" in github_message(response).lower():
            return SECONDARY_LIMIT_WAIT
        return None

    def check_connection(self, client: httpx.Client, settings: Mapping[str, str]) -> None:
        """The repository exists, the token can see it, and it has issues turned on."""
        url = f"https://api.github.com/repos/{settings['owner']}/{settings['repo']}"
        resp = client.get(url, headers=API_HEADERS)
        if resp.status_code != 200:
            raise DeliveryRejected(github_message(resp))
        if resp.json().get("has_issues") is False:
            raise DeliveryRejected(f"{settings['owner']}/{settings['repo']} has issues turned off")
