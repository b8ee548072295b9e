"""Sending one granted payload to the third party through its connector.

Every delivery, a manifest action or a plugin's ``deliver`` hook, goes through
the same guarded transport (:mod:`broker.core.egress`), so the rules are the same:

- 2xx: delivered (a manifest action keeps the third party's JSON ``id``; a hook
  returns its own ``response_id``).
- 401: the access token is refreshed once and the request repeated.
- 429 and 5xx (and answers a connector's ``retry_delay`` calls rate limits): retried
  with exponential backoff and full jitter, honouring ``Retry-After``, up to
  ``BROKER_DELIVERY_MAX_ATTEMPTS`` per transfer; a wait up to
  ``BROKER_RETRY_HOLD_MAX`` is held in place, a longer one ends the run and the
  engine reschedules the transfer (no worker sleeps through an hour's Retry-After).
- A connection that could not be opened is retried like a 5xx (nothing was sent).
- Any other error ends ``failed``: the broker never claims a delivery it did not
  see acknowledged.
- No answer after the request went out (a timeout, a dropped connection) may
  mean it arrived: the outcome says ``unknown``, and the engine ends the transfer
  ``outcome_unknown``, or, for a third party the manifest declares idempotent,
  sends it again under the same key. It never resends otherwise.
- A hook that raises, returns nonsense, reaches for an undeclared host or runs
  longer than ``BROKER_CONNECTOR_TIMEOUT`` ends ``failed`` with that reason (a code and
  the exception's type, ``connector_error (KeyError)``, never the exception's text).
Every attempt is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from broker.core.connector import Connector
from broker.core.dispatch import DeliveryOutcome, dispatch
from broker.core.egress import RetryPolicy, retry_after_seconds
from broker.core.errors import InvalidSetting
from broker.core.failures import setting_failure
from broker.core.manifest import Action
from broker.flows.connector_calls import egress_transport, user_agent
from broker.flows.tokens import StoredToken, access_token, refresh_access_token
from broker.runtime import Runtime

__all__ = ["DeliveryOutcome", "deliver", "retry_after_seconds"]

log = logging.getLogger("broker.connectors")


def deliver(
    rt: Runtime,
    *,
    connection_id: str,
    connector: Connector,
    action: Action,
    payload: dict[str, Any],
    settings: Mapping[str, str] | None,
    idempotency_key: str | None = None,
    max_attempts: int | None = None,
    token: StoredToken | None = None,
) -> DeliveryOutcome:
    """Deliver the granted ``payload``; the outcome says what happened, it never raises
    for anything the connector or the third party did.

    ``idempotency_key`` goes on every request in the header the manifest names
    (default ``Idempotency-Key``). ``max_attempts`` is what is left of the
    transfer's attempts; a wait longer than ``BROKER_RETRY_HOLD_MAX`` ends this run
    with ``retry_in`` set, for the engine to reschedule."""
    values = dict(settings or {})
    try:
        bound = connector.bind(action, values)
    except InvalidSetting as exc:
        where = f"connector {connector.id!r}, action {action.name!r}"
        reason = setting_failure(log, exc, where=where)
        return DeliveryOutcome(delivered=False, reason=f"{reason}; connect again to set it")
    s = rt.settings
    policy = RetryPolicy(
        max_attempts=max_attempts or s.delivery_max_attempts,
        backoff_base=s.delivery_backoff_base,
        backoff_max=s.delivery_backoff_max,
        retry_after_max=s.retry_after_max,
        hold_max=s.retry_hold_max,
    )
    transport = egress_transport(
        rt,
        connector,
        values,
        token=lambda: access_token(rt, connection_id, stored=token),
        refresh=lambda stale: refresh_access_token(rt, connection_id, stale=stale),
        policy=policy,
    )
    header = connector.manifest.delivery.idempotency_header
    return dispatch(
        connector,
        bound,
        payload,
        transport,
        user_agent=user_agent(rt),
        http_timeout=s.http_timeout,
        time_limit=s.connector_timeout,
        headers={header: idempotency_key} if header and idempotency_key else None,
    )
