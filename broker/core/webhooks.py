"""Webhooks to the host: event types, payloads, signatures and the retry schedule.

The broker tells the host's backend what happened by POSTing a Standard Webhooks
message (https://www.standardwebhooks.com/) to each endpoint subscribed to it:

- headers ``webhook-id`` (the delivery's ``msg_…`` id, the same on every attempt: a
  receiver deduplicates on it), ``webhook-timestamp`` (Unix seconds of this attempt)
  and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``; while
  a rotated secret is still valid, one signature per secret, space-separated);
- body ``{"type", "timestamp", "data"}``: ``data`` holds ids, categories, status and
  links only, never a token, a secret or a transfer's data.

Webhook events are derived from audit entries (:func:`webhook_events`), so a
delivery is recorded in the same transaction as the event that causes it. The
mapping from audit event to webhook types:

=============================  ==================================================
audit event                    webhook types
=============================  ==================================================
``consent.granted``            ``connection.created``, ``consent.granted``, and
                               ``connection.activated`` when its outcome is
                               ``active`` (a connection waiting for the host's
                               confirmation is activated by ``connection.confirmed``);
                               a renewed consent (``details.renewed``) sends no
                               ``connection.created``
``connection.confirmed``       ``connection.activated``
``connection.revoked``         ``connection.revoked``
``consent.withdrawn``          ``consent.withdrawn``
``transfer.delivered``         ``transfer.delivered``
``transfer.failed``            ``transfer.failed``
``transfer.blocked``           ``transfer.blocked``
``policy.changed``             ``policy.changed``
``connection.reconsent_required``  ``connection.reconsent_required``
``connection.error``           ``connection.error``
``checkpoint.signed``          ``checkpoint.signed``
=============================  ==================================================

The last three audit names are mapped for when those events are audited; today a
connection that needs re-consent or fails its refresh for good (``broker.flows.tokens``)
changes status without an audit entry, and checkpoints (``broker.flows.checkpoints``)
are stored apart from the log, so their webhooks are enqueued directly, in the
transaction of the change (:func:`broker.store.webhook_outbox.enqueue_event`). A
``checkpoint.signed`` message carries ``checkpoint_id``, ``tree_size`` and a link to
that checkpoint in ``GET /v1/audit/checkpoints``.
Other audit events (``transfer.pending``, ``token.refreshed``, …) send nothing.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from standardwebhooks.webhooks import Webhook

from broker.core.addresses import address_problem
from broker.core.statuses import ConnectionStatus
from broker.core.urls import is_loopback_host, url_problem

__all__ = [
    "EVENT_TYPES",
    "MAX_RETRY_SPAN",
    "PING",
    "RETRY_DELAYS",
    "endpoint_url_problem",
    "event_data",
    "message_body",
    "new_endpoint_secret",
    "retry_delay",
    "signature_header",
    "webhook_events",
]

EVENT_TYPES: tuple[str, ...] = (
    "connection.created",
    "connection.activated",
    "connection.revoked",
    "connection.reconsent_required",
    "connection.error",
    "consent.granted",
    "consent.withdrawn",
    "transfer.delivered",
    "transfer.failed",
    "transfer.blocked",
    "policy.changed",
    "checkpoint.signed",
)
PING = "webhook.ping"
"""The type of ``POST /v1/webhook-endpoints/{id}/test``: sent whatever an endpoint
subscribes to."""

_DIRECT: dict[str, tuple[str, ...]] = {
    "connection.confirmed": ("connection.activated",),
    "connection.revoked": ("connection.revoked",),
    "consent.withdrawn": ("consent.withdrawn",),
    "transfer.delivered": ("transfer.delivered",),
    "transfer.failed": ("transfer.failed",),
    "transfer.blocked": ("transfer.blocked",),
    "policy.changed": ("policy.changed",),
    "connection.reconsent_required": ("connection.reconsent_required",),
    "connection.error": ("connection.error",),
    "checkpoint.signed": ("checkpoint.signed",),
}


def webhook_events(
    event: str, outcome: str | None, details: Mapping[str, Any] | None = None
) -> tuple[str, ...]:
    """The webhook types an audit entry of ``event`` (with ``outcome`` and ``details``)
    causes, in order. A consent renewed on an existing connection (``details.renewed``:
    a re-consent or a reconnect) announces no new connection."""
    if event == "consent.granted":
        created = () if (details or {}).get("renewed") else ("connection.created",)
        if outcome == ConnectionStatus.ACTIVE:
            return (*created, "consent.granted", "connection.activated")
        return (*created, "consent.granted")
    return _DIRECT.get(event, ())


# -- payloads ---------------------------------------------------------------------------

_IDS = ("user_id", "connector_id", "connection_id", "transfer_id", "consent_id")
_CHECKPOINT_IDS = ("checkpoint_id", "tree_size")


def _links(ids: Mapping[str, Any]) -> dict[str, str]:
    """Paths of the API resources the event is about (made absolute when sent)."""
    links: dict[str, str] = {}
    if cid := ids.get("connection_id"):
        links["connection"] = f"/v1/connections/{quote(cid, safe='')}"
    if tid := ids.get("transfer_id"):
        links["transfer"] = f"/v1/transfers/{quote(tid, safe='')}"
    if kid := ids.get("consent_id"):
        links["consent_receipt"] = f"/v1/consents/{quote(kid, safe='')}/receipt"
    if nid := ids.get("connector_id"):
        links["connector"] = f"/v1/connectors/{quote(nid, safe='')}"
    if isinstance(checkpoint := ids.get("checkpoint_id"), int):
        links["checkpoint"] = f"/v1/audit/checkpoints?cursor={checkpoint - 1}&limit=1"
    return links


def event_data(
    *,
    audit_seq: int | None,
    ids: Mapping[str, Any],
    categories: Sequence[str] = (),
    status: str | None = None,
) -> dict[str, Any]:
    """The ``data`` of a message: ids, categories, status and links, nothing else."""
    data: dict[str, Any] = {k: ids[k] for k in _IDS if ids.get(k)}
    data.update({k: ids[k] for k in _CHECKPOINT_IDS if isinstance(ids.get(k), int)})
    if audit_seq is not None:
        data["audit_seq"] = audit_seq
    if categories:
        data["categories"] = list(categories)
    if status is not None:
        data["status"] = status
    data["links"] = _links(ids)
    return data


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def message_body(
    event_type: str, *, occurred_at: datetime, data: Mapping[str, Any], base_url: str
) -> str:
    """The JSON body sent: ``{"type", "timestamp", "data"}``, links made absolute."""
    out = dict(data)
    links = out.get("links")
    if isinstance(links, dict):
        base = base_url.rstrip("/")
        out["links"] = {k: base + v if v.startswith("/") else v for k, v in links.items()}
    body = {"type": event_type, "timestamp": _rfc3339(occurred_at), "data": out}
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


# -- secrets and signatures -------------------------------------------------------------


def new_endpoint_secret() -> str:
    """A new signing secret: ``whsec_`` and 32 random bytes in base64 (Standard Webhooks)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signature_header(
    endpoint_secrets: Sequence[str], *, msg_id: str, timestamp: datetime, body: str
) -> str:
    """``webhook-signature``: a ``v1,…`` signature per secret, space-separated."""
    return " ".join(
        Webhook(secret).sign(msg_id=msg_id, timestamp=timestamp, data=body)
        for secret in endpoint_secrets
    )


# -- URLs ------------------------------------------------------------------------------


def endpoint_url_problem(url: str) -> str | None:
    """Why ``url`` may not receive webhooks, or ``None``: the connectors' rules (https;
    plain http only for a loopback host, for development and tests), and an IP literal
    must be public unless it is loopback. (A name is checked where the socket opens:
    the broker's HTTP client refuses non-public addresses unless the host is loopback.)"""
    if not isinstance(url, str) or not url or len(url) > 2000:
        return "the URL must be a non-empty string of at most 2000 characters"
    if problem := url_problem(url):
        return problem
    host = urlsplit(url).hostname or ""
    if is_loopback_host(host):
        return None
    why = address_problem(host.strip("[]"))
    if why is not None and why != "not an IP address":
        return f"{url!r} points at {why}; webhooks go to public addresses only"
    return None


# -- retries ----------------------------------------------------------------------------

MAX_RETRY_SPAN = 3 * 24 * 3600.0
"""No attempt is made more than three days after the first."""


def _schedule() -> tuple[float, ...]:
    delays: list[float] = []
    total, n = 0.0, 0
    while True:
        delay = min(5.0 * 4**n, 24 * 3600.0)
        if total + delay > MAX_RETRY_SPAN:
            return tuple(delays)
        delays.append(delay)
        total += delay
        n += 1


RETRY_DELAYS: tuple[float, ...] = _schedule()
"""Seconds before retry 1, 2, …: 5 s * 4^(n-1), capped at 24 h, while the sum stays within
three days: 5 s, 20 s, 80 s, 5 min 20 s, 21 min 20 s, 1 h 25 min, 5 h 41 min,
22 h 45 min, 24 h (ten attempts in all, the last 54.3 h after the first)."""


def retry_delay(attempts: int) -> float | None:
    """Seconds to wait after the ``attempts``-th failed attempt, or ``None``: give up."""
    if 1 <= attempts <= len(RETRY_DELAYS):
        return RETRY_DELAYS[attempts - 1]
    return None
