"""Running a connector's hooks safely and turning what happened into an outcome.

The broker hands a hook a private deep copy of the granted payload and an
``httpx.Client`` over an :class:`~broker.core.egress.EgressTransport`. A hook
written in Python (a plugin's ``deliver``, ``check_connection`` or
``before_revoke``) runs in a worker thread with a time limit; whatever it does,
raise, hang, return nonsense or try another host, the result is an outcome with
a clear reason, never an exception that escapes to the caller, and the
transport is closed afterwards so a hook still running can send nothing more.

The reason never holds the text of an exception the hook raised (see
:mod:`broker.core.failures`): ``connector_error (KeyError)``; the text goes to the
operator log.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import httpx

from broker.core.connector import BoundAction, Connector, DeliveryResult
from broker.core.egress import EgressStopped, EgressTransport
from broker.core.errors import (
    BrokerError,
    ConnectorFailed,
    DeliveryRejected,
    EgressDenied,
    TokenRejected,
)
from broker.core.failures import FailureCode, failure_reason, logged_failure

__all__ = ["DeliveryOutcome", "HookTimedOut", "dispatch", "guarded_client", "run_hook"]

log = logging.getLogger("broker.connectors")

T = TypeVar("T")


@dataclass
class DeliveryOutcome:
    delivered: bool
    status_code: int | None = None
    response_id: str | None = None
    reason: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    retry_in: float | None = None  # not delivered yet: try again in this many seconds
    unknown: bool = False  # a request went out and no answer came: it may have arrived


class HookTimedOut(Exception):
    """A connector hook did not return within its time limit."""


def guarded_client(
    transport: EgressTransport,
    *,
    user_agent: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
) -> httpx.Client:
    """The client a hook receives: guarded transport, no redirects, no proxies from env;
    ``headers`` go on every request (the delivery's idempotency key)."""
    return httpx.Client(
        transport=transport,
        follow_redirects=False,
        timeout=timeout,
        headers={"User-Agent": user_agent, **(headers or {})},
        trust_env=False,
    )


def run_hook(fn: Callable[[], T], *, time_limit: float | None, name: str) -> T:
    """Run ``fn`` in a daemon thread; ``HookTimedOut`` if it takes longer than
    ``time_limit`` seconds (the thread is abandoned, its transport must be stopped)."""
    if time_limit is None:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"connector-{name}", daemon=True)
    thread.start()
    thread.join(time_limit)
    if thread.is_alive():
        raise HookTimedOut(f"did not finish within {time_limit:g} s")
    error = box.get("error")
    if isinstance(error, Exception):
        raise error
    if error is not None:  # SystemExit and the like, raised by plugin code
        raise ConnectorFailed(f"raised {type(error).__name__}") from error
    return cast(T, box["value"])  # what fn returned, set by target above


def _reason(exc: BaseException, transport: EgressTransport, connector: Connector) -> str:
    elog = transport.log
    if isinstance(exc, HookTimedOut):
        return f"the connector {exc}; anything it sent before is in the attempts"
    if isinstance(exc, EgressDenied):
        return exc.message
    if elog.fatal:
        return elog.fatal
    if isinstance(exc, DeliveryRejected):
        return elog.gave_up or exc.message
    if isinstance(exc, TokenRejected):
        return f"the third party refused the access token: {exc.message}"
    if isinstance(exc, EgressStopped):
        return str(exc)
    if isinstance(exc, httpx.HTTPError):
        # the attempt's error text, as EgressTransport records it
        last: str | None = elog.attempts[-1].get("error") if elog.attempts else None
        if elog.gave_up:
            return elog.gave_up
        if last:
            return last
    cause = exc.__cause__
    if isinstance(exc, ConnectorFailed) and cause is not None and not isinstance(cause, Exception):
        return failure_reason(FailureCode.CONNECTOR_ERROR, cause)  # SystemExit & co (run_hook)
    if isinstance(exc, BrokerError):  # raised on purpose: its message is written for users
        return exc.message
    where = f"connector {connector.id!r} raised in deliver"
    return logged_failure(log, FailureCode.CONNECTOR_ERROR, exc, where=where)


def dispatch(
    connector: Connector,
    action: BoundAction,
    payload: dict[str, Any],
    transport: EgressTransport,
    *,
    user_agent: str,
    http_timeout: float,
    time_limit: float | None,
    headers: Mapping[str, str] | None = None,
) -> DeliveryOutcome:
    """Deliver ``payload`` through ``connector``; never raises for what the connector
    or the third party did. ``time_limit`` applies to plugin code only."""
    outcome = DeliveryOutcome(delivered=False, attempts=transport.log.attempts)
    limit = time_limit if connector.has_deliver_hook else None
    if limit is not None and transport.deadline is None:
        transport.deadline = time.monotonic() + limit
    client = guarded_client(transport, user_agent=user_agent, timeout=http_timeout, headers=headers)

    def call() -> object:
        return connector.deliver(action, copy.deepcopy(payload), client)

    try:
        try:
            result = run_hook(call, time_limit=limit, name=connector.id)
        except TokenRejected:
            if not transport.force_refresh():
                raise
            result = run_hook(call, time_limit=limit, name=connector.id)
    except Exception as exc:
        outcome.reason = _reason(exc, transport, connector)
        result = None
    else:
        if not isinstance(result, DeliveryResult | None):
            outcome.reason = failure_reason(FailureCode.INVALID_RESULT, result)
        elif transport.log.refused:  # a refusal the hook caught and went on from
            refusals = [
                a["error"] for a in transport.log.attempts if "refused" in a.get("error", "")
            ]
            why = refusals[0].removeprefix("refused before connecting: ") if refusals else ""
            outcome.reason = (
                f"connector {connector.id!r} tried to reach {transport.log.refused[0]}; "
                f"refused: {why or 'its manifest does not declare it'}"
            )
        elif transport.log.fatal:
            outcome.reason = transport.log.fatal
        else:
            outcome.delivered = True
            outcome.response_id = result.response_id if result is not None else None
    finally:
        transport.stop("the delivery is over")
        client.close()
    outcome.status_code = transport.log.last_status
    if not outcome.delivered and transport.log.retry_in is not None:
        outcome.retry_in = transport.log.retry_in
    if not outcome.delivered and transport.log.unanswered:
        outcome.unknown = True
    if outcome.reason:
        outcome.reason = outcome.reason[:1000]
    return outcome
