"""The only way a connector's code reaches the network: a guarded httpx transport.

:class:`EgressTransport` sits under the ``httpx.Client`` a connector's hooks
receive. For every request it:

1. refuses any host the manifest does not declare (its action URLs and
   ``hosts``, with the connection's settings filled in), and any URL that is not
   https (plain http only on loopback), *before* a socket is opened; the refusal
   is logged (logger ``broker.egress``) and recorded, and fails the transfer.
   Below it, the inner transport the broker gives it
   (:class:`~broker.core.addresses.PinnedTransport`) resolves the host once, refuses
   private, loopback, link-local and metadata addresses, and connects to the
   checked address; such a refusal is recorded the same way;
2. adds ``Authorization: Bearer <access token>`` itself, replacing any such
   header the connector set, on a copy of the request: the connector's request
   and response objects never carry the token;
3. applies the broker's delivery rules: a 401 refreshes the token once (per
   delivery) and repeats the request; 429, 500, 502, 503 and 504 (and answers the
   connector's ``retry_delay`` hook calls rate limits) are retried with backoff,
   honouring ``Retry-After``; a connection that could not be opened is retried
   like a 5xx; an answer that never came after the request went out is not
   retried (the outcome is unknown);
4. records every attempt in :class:`EgressLog` (``n``, ``at``, ``request``,
   ``status`` or ``error``, ``retry_after``, ``wait``).

After the broker has recorded the outcome it closes the transport, so a hook
still running (one that timed out) cannot send anything more.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from broker.core.connector import provider_message
from broker.core.errors import BrokerError, EgressDenied, InvalidSetting
from broker.core.manifest import Manifest
from broker.core.placeholders import render_url
from broker.core.times import rfc3339
from broker.core.urls import url_problem

__all__ = [
    "RETRYABLE_STATUSES",
    "EgressLog",
    "EgressStopped",
    "EgressTransport",
    "RetryPolicy",
    "allowed_origins",
    "retry_after_seconds",
]

log = logging.getLogger("broker.egress")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_HOP_HEADERS = frozenset({"content-encoding", "transfer-encoding", "content-length"})
_DEFAULT_PORTS = {"https": 443, "http": 80}

Origin = tuple[str, int]


class EgressStopped(httpx.TransportError):
    """The delivery is over (timed out, finished, or has no usable token): not sent."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 60.0
    # A wait longer than this is not slept here: the delivery stops and says when
    # to try again (``EgressLog.retry_in``), so the engine reschedules the job.
    hold_max: float | None = None


@dataclass
class EgressLog:
    """What happened on the wire during one delivery (or one hook call)."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    fatal: str | None = None
    gave_up: str | None = None
    last_status: int | None = None
    refreshed: bool = False
    retry_in: float | None = None  # seconds until the next attempt is due, if rescheduled
    unanswered: bool = False  # a request went out and no answer came back


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


def _origin(url: str) -> Origin | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port or _DEFAULT_PORTS.get(parts.scheme, 0)


def allowed_origins(manifest: Manifest, settings: Mapping[str, str]) -> frozenset[Origin]:
    """The (host, port) pairs a connection's hooks may reach: the manifest's action
    URLs and ``hosts``, rendered with the connection's settings."""
    templates = [a.url for a in manifest.actions] + [f"https://{h}/" for h in manifest.hosts]
    origins: set[Origin] = set()
    for template in templates:
        try:
            origin = _origin(render_url(template, settings))
        except InvalidSetting:
            continue  # a setting this connection lacks: that host stays closed
        if origin is not None:
            origins.add(origin)
    return frozenset(origins)


def _detach(resp: httpx.Response) -> httpx.Response:
    """A fresh, fully read response without the request it answered."""
    headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in _HOP_HEADERS]
    extensions = {
        k: v for k, v in resp.extensions.items() if k in ("http_version", "reason_phrase")
    }
    out = httpx.Response(
        resp.status_code, headers=headers, content=resp.content, extensions=extensions
    )
    resp.close()
    return out


class EgressTransport(httpx.BaseTransport):
    def __init__(
        self,
        inner: httpx.BaseTransport | Callable[[httpx.URL], httpx.BaseTransport],
        *,
        connector_id: str,
        allowed: Collection[Origin],
        token: Callable[[], str] | None = None,
        refresh: Callable[[str], str] | None = None,
        retry_delay: Callable[[httpx.Response, datetime], float | None] | None = None,
        policy: RetryPolicy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        deadline: float | None = None,
        egress_log: EgressLog | None = None,
    ) -> None:
        self._inner = inner
        self.connector_id = connector_id
        self.allowed = frozenset(allowed)
        self._token_source = token
        self._refresh = refresh
        self._retry_delay = retry_delay
        self.policy = policy or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self.deadline = deadline
        self.log = egress_log or EgressLog()
        self._token: str | None = None
        self._closed: str | None = None
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Refuse every later request (the broker has recorded the outcome)."""
        self._closed = reason

    def close(self) -> None:
        self.stop("the delivery is over")

    def force_refresh(self) -> bool:
        """Refresh once (a hook said the token was refused); False if not possible."""
        if self._refresh is None or self.log.refreshed:
            return False
        self.log.refreshed = True
        try:
            self._token = self._refresh(self._current_token())
        except BrokerError as exc:
            self.log.fatal = f"token refresh failed: {exc.message}"
            return False
        return True

    # -- the request path ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed is not None:
            raise EgressStopped(self._closed)
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise EgressStopped("the connector's time limit has passed")

    def _check_host(self, request: httpx.Request) -> None:
        url = str(request.url)
        problem = url_problem(url)
        origin = _origin(url)
        if problem is None and origin in self.allowed:
            return
        where = f"{request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}"
        why = problem or "its manifest does not declare this host"
        self.log.refused.append(where)
        self.log.attempts.append(
            {
                "n": len(self.log.attempts) + 1,
                "at": rfc3339(self._clock()),
                "request": f"{request.method} {where}",
                "error": f"refused before connecting: {why}",
            }
        )
        log.warning("connector %r tried to reach %s; refused: %s", self.connector_id, where, why)
        raise EgressDenied(
            f"connector {self.connector_id!r} tried to reach {where}; refused: {why}",
            details={"connector": self.connector_id, "destination": where},
        )

    def _current_token(self) -> str:
        with self._lock:
            if self._token is None and self._token_source is not None:
                try:
                    self._token = self._token_source()
                except BrokerError as exc:
                    self.log.fatal = f"no usable access token: {exc.message}"
                    raise EgressStopped(self.log.fatal) from None
            return self._token or ""

    def _inner_for(self, url: httpx.URL) -> httpx.BaseTransport:
        if isinstance(self._inner, httpx.BaseTransport):
            return self._inner
        return self._inner(url)

    def _send_once(self, request: httpx.Request, body: bytes, token: str) -> httpx.Response:
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "authorization"]
        if token:
            headers.append(("Authorization", f"Bearer {token}"))
        outgoing = httpx.Request(
            request.method,
            request.url,
            headers=headers,
            content=body,
            extensions=request.extensions,
        )
        resp = self._inner_for(request.url).handle_request(outgoing)
        resp.read()
        return resp

    def _wait(
        self,
        record: dict[str, Any],
        resp: httpx.Response | None,
        delay: float | None,
        attempt: int,
    ) -> float:
        if delay is None and resp is not None:
            delay = retry_after_seconds(resp.headers.get("retry-after"), self._clock())
        if delay is not None and delay > 0:
            hold = self.policy.hold_max
            wait = delay if hold is not None else min(delay, self.policy.retry_after_max)
            record["retry_after"] = wait
        else:
            ceiling = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (attempt - 1))
            wait = random.uniform(0, ceiling)  # noqa: S311  (jitter, not security)
        record["wait"] = round(wait, 3)
        return wait

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._check_open()
        self._check_host(request)
        body = request.read()
        label = f"{request.method} {request.url.host}{request.url.path}"
        attempt = 0
        while True:
            attempt += 1
            self._check_open()
            record: dict[str, Any] = {
                "n": len(self.log.attempts) + 1,
                "at": rfc3339(self._clock()),
                "request": label,
            }
            self.log.attempts.append(record)
            token = self._current_token() if self._token_source is not None else ""
            resp: httpx.Response | None = None
            try:
                resp = self._send_once(request, body, token)
            except EgressDenied as exc:  # the address check at the socket (core.addresses)
                where = f"{request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}"
                record["error"] = f"refused before connecting: {exc.message}"
                self.log.refused.append(where)
                log.warning("connector %r: %s", self.connector_id, exc.message)
                raise EgressDenied(
                    f"connector {self.connector_id!r} tried to reach {where}; refused: "
                    f"{exc.message}",
                    details={"connector": self.connector_id, "destination": where},
                ) from None
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                record["error"] = f"could not connect ({type(exc).__name__})"
                failure: httpx.HTTPError = exc
            except httpx.HTTPError as exc:
                record["error"] = f"no answer ({type(exc).__name__}); the outcome is unknown"
                self.log.unanswered = True
                raise
            else:
                record["status"] = self.log.last_status = resp.status_code
            if resp is not None and 200 <= resp.status_code < 300:
                return _detach(resp)
            if resp is not None and resp.status_code == 401 and self._can_refresh():
                record["error"] = "access token refused; refreshing"
                if not self.force_refresh():
                    return _detach(resp)
                continue
            delay = None
            if resp is not None:
                record["error"] = provider_message(resp)
                if self._retry_delay is not None:
                    delay = self._retry_delay(resp, self._clock())
                if delay is None and resp.status_code not in RETRYABLE_STATUSES:
                    return _detach(resp)
            if attempt >= self.policy.max_attempts:
                self.log.gave_up = f"gave up after {attempt} attempts: {record['error']}"
                if resp is None:
                    raise failure
                return _detach(resp)
            wait = self._wait(record, resp, delay, attempt)
            if self.policy.hold_max is not None and wait > self.policy.hold_max:
                self.log.retry_in = wait
                self.log.gave_up = f"rescheduled in {wait:.0f}s after: {record['error']}"
                if resp is None:
                    raise failure
                return _detach(resp)
            if self.deadline is not None and time.monotonic() + wait > self.deadline:
                self.log.gave_up = (
                    f"gave up after {attempt} attempts: waiting {wait:.0f}s more would pass "
                    f"the connector's time limit ({record['error']})"
                )
                if resp is None:
                    raise failure
                return _detach(resp)
            if resp is not None:
                resp.close()
            self._sleep(wait)

    def _can_refresh(self) -> bool:
        return (
            self._token_source is not None
            and self._refresh is not None
            and not (self.log.refreshed)
        )
