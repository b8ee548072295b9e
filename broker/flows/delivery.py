"""Sending one granted payload to the third party, with retries.

- 2xx: delivered (the third party's ``id`` is kept when its JSON has one).
- 401: the access token is refreshed once and the request repeated.
- 429 and 5xx: retried with exponential backoff and full jitter, honouring
  ``Retry-After`` (capped), up to ``BROKER_DELIVERY_MAX_ATTEMPTS``.
- A connection that could not be opened is retried like a 5xx (nothing was sent).
- Any other error, or no answer after the request went out, ends ``failed``:
  the broker never claims a delivery it did not see acknowledged, and it does
  not resend a request that may have arrived.
Every attempt is recorded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from broker.core.errors import BrokerError
from broker.core.manifest import Action
from broker.flows.tokens import access_token, refresh_access_token
from broker.runtime import Runtime

__all__ = ["DeliveryOutcome", "deliver", "retry_after_seconds"]

_RETRYABLE = {429, 500, 502, 503, 504}


@dataclass
class DeliveryOutcome:
    delivered: bool
    status_code: int | None = None
    response_id: str | None = None
    reason: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """RFC 9110 ``Retry-After``: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _provider_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    if isinstance(body, dict):
        for key in ("error_description", "message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return f"HTTP {resp.status_code}: {value[:300]}"
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return f"HTTP {resp.status_code}: {value['message'][:300]}"
    return f"HTTP {resp.status_code}"


def _response_id(resp: httpx.Response) -> str | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        value = body.get("id")
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)[:200]
    return None


def deliver(rt: Runtime, *, connection_id: str, action: Action, body: bytes) -> DeliveryOutcome:
    settings = rt.settings
    outcome = DeliveryOutcome(delivered=False)
    refreshed = False
    try:
        token = access_token(rt, connection_id)
    except BrokerError as exc:
        outcome.reason = f"no usable access token: {exc.message}"
        return outcome
    attempt = 0
    while True:
        attempt += 1
        record: dict[str, Any] = {"n": attempt, "at": rt.clock().isoformat()}
        outcome.attempts.append(record)
        try:
            resp = rt.http.request(
                action.method.upper(),
                action.url,
                content=body,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            record["error"] = f"could not connect ({type(exc).__name__})"
            status = None
        except httpx.HTTPError as exc:
            record["error"] = f"no answer ({type(exc).__name__}); the outcome is unknown"
            outcome.reason = record["error"]
            return outcome
        else:
            status = resp.status_code
            record["status"] = status
        if status is not None and 200 <= status < 300:
            outcome.delivered = True
            outcome.status_code = status
            outcome.response_id = _response_id(resp)
            return outcome
        if status == 401 and not refreshed:
            refreshed = True
            record["error"] = "access token refused; refreshing"
            try:
                token = refresh_access_token(rt, connection_id, stale=token)
            except BrokerError as exc:
                outcome.status_code = status
                outcome.reason = f"token refresh failed: {exc.message}"
                return outcome
            continue
        if status is not None and status not in _RETRYABLE:
            outcome.status_code = status
            outcome.reason = _provider_message(resp)
            record["error"] = outcome.reason
            return outcome
        if status is not None:
            outcome.status_code = status
            record["error"] = _provider_message(resp)
        if attempt >= settings.delivery_max_attempts:
            outcome.reason = f"gave up after {attempt} attempts: {record.get('error', 'no answer')}"
            return outcome
        wait = None
        if status is not None:
            wait = retry_after_seconds(resp.headers.get("retry-after"), rt.clock())
        if wait is not None:
            wait = min(wait, settings.retry_after_max)
            record["retry_after"] = wait
        else:
            ceiling = min(
                settings.delivery_backoff_max, settings.delivery_backoff_base * 2 ** (attempt - 1)
            )
            wait = random.uniform(0, ceiling)  # noqa: S311  (jitter, not security)
        record["wait"] = round(wait, 3)
        rt.sleep(wait)
