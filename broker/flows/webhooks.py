"""Sending webhooks to the host: one sender per process, beside the delivery workers.

:class:`WebhookSender` (started by :class:`broker.flows.workers.DeliveryWorkers`, so
not with ``BROKER_WORKERS=0``; every ``broker worker`` runs one too) claims due
deliveries (:mod:`broker.store.webhook_jobs`: leased, one at a time per endpoint and
connection, so a connection's events arrive in order), signs each with the
endpoint's secret (and the previous one during a rotation's 24 h), and POSTs it
through the broker's HTTP client, which refuses non-public addresses unless the
host is loopback. The URL is checked again before each attempt (https; http only
for loopback).

A 2xx answer delivers the message. Anything else (another status, a redirect, no
connection, no answer) is a failed attempt, retried after
:data:`broker.core.webhooks.RETRY_DELAYS`; after the last one the delivery fails
for good, and ``BROKER_WEBHOOK_MAX_FAILURES`` such failures in a row disable the
endpoint. The sender looks for due deliveries every ``BROKER_WORKER_POLL`` seconds
and at once after a commit that enqueued some in this process.

``webhook-timestamp`` is the wall-clock time of the attempt (a receiver checks it
against its own clock); scheduling uses the runtime's clock (``rt.clock``).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx

from broker.core.errors import BrokerError
from broker.core.webhooks import endpoint_url_problem, message_body, retry_delay, signature_header
from broker.runtime import Runtime
from broker.store import webhook_outbox
from broker.store.audit import on_append
from broker.store.webhook_jobs import (
    DeliveryJob,
    any_due,
    claim_due,
    record_delivered,
    record_failed,
    record_retry,
)

__all__ = ["SECRET_KIND", "WebhookSender", "wake_sender"]

log = logging.getLogger("broker.webhooks")

SECRET_KIND = "webhook_secret"  # the vault's binding of an endpoint's sealed secret


def _any_due(rt: Runtime, now: datetime) -> bool:
    """One cheap read before a claim (a write): is anything due or lapsed?"""
    with rt.engine.connect() as conn:
        return any_due(conn, now=now)


class WebhookSender:
    def __init__(self, rt: Runtime, *, owner: str, threads: int = 4) -> None:
        self.rt = rt
        self.owner = owner
        self.threads = max(1, threads)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._unlisten: object = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> WebhookSender:
        self._unlisten = on_append(self.rt.engine, self._appended)
        self._thread = threading.Thread(target=self._loop, name="webhook-sender", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if callable(self._unlisten):
            self._unlisten()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def wake(self) -> None:
        self._wake.set()

    def _appended(self, _seq: int) -> None:
        if webhook_outbox.take_hint(self.rt.engine):
            self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.rt.settings.worker_poll)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                while self.run_due() >= self.threads and not self._stopping.is_set():
                    pass  # a full batch: more may be due
            except Exception:
                log.exception("the webhook sender could not reach the database")

    # -- work -----------------------------------------------------------------------------

    def run_due(self) -> int:
        """Claim what is due now and send it (in parallel, up to ``threads``); returns
        how many were claimed. The loop calls it; a test may call it directly."""
        rt = self.rt
        now = rt.clock()
        if not _any_due(rt, now):
            return 0
        until = now + rt.lease_duration() + timedelta(seconds=rt.settings.http_timeout)
        jobs = claim_due(rt.engine, owner=self.owner, now=now, until=until, limit=self.threads)
        if len(jobs) == 1:
            self._send(jobs[0])
        elif jobs:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="webhook")
            list(self._pool.map(self._send, jobs))
        return len(jobs)

    def _secrets(self, job: DeliveryJob, now: datetime) -> list[str]:
        vault = self.rt.vault
        out = [vault.open(job.secret, connection_id=job.endpoint_id, kind=SECRET_KIND)]
        expires = job.previous_secret_expires_at
        if job.previous_secret and expires is not None and expires > now:
            out.append(
                vault.open(job.previous_secret, connection_id=job.endpoint_id, kind=SECRET_KIND)
            )
        return out

    def _send(self, job: DeliveryJob) -> None:
        rt = self.rt
        code: int | None = None
        try:
            problem = endpoint_url_problem(job.url)
            if problem is not None:
                raise BrokerError(f"refused before connecting: {problem}")
            body = message_body(
                job.event_type,
                occurred_at=job.occurred_at,
                data=job.payload,
                base_url=rt.settings.resolved_base_url,
            )
            sent_at = datetime.now(UTC)
            headers = {
                "content-type": "application/json",
                "webhook-id": job.id,
                "webhook-timestamp": str(int(sent_at.timestamp())),
                "webhook-signature": signature_header(
                    self._secrets(job, rt.clock()), msg_id=job.id, timestamp=sent_at, body=body
                ),
            }
            with rt.http.stream("POST", job.url, content=body.encode(), headers=headers) as resp:
                code = resp.status_code  # the body is never read: it is not ours to keep
            if 200 <= code < 300:
                record_delivered(
                    rt.engine,
                    delivery_id=job.id,
                    endpoint_id=job.endpoint_id,
                    owner=self.owner,
                    now=rt.clock(),
                    code=code,
                )
                return
            error = f"the endpoint answered HTTP {code}"
        except BrokerError as exc:  # egress refused, the secret could not be opened
            error = exc.message
        except httpx.TimeoutException:
            error = "no answer in time"
        except httpx.HTTPError as exc:
            error = f"could not connect ({type(exc).__name__})"
        self._failed(job, code, error)

    def _failed(self, job: DeliveryJob, code: int | None, error: str) -> None:
        rt = self.rt
        now = rt.clock()
        delay = retry_delay(job.attempts)
        if delay is not None:
            record_retry(
                rt.engine,
                delivery_id=job.id,
                owner=self.owner,
                at=now + timedelta(seconds=delay),
                code=code,
                error=error,
            )
            return
        disabled = record_failed(
            rt.engine,
            delivery_id=job.id,
            endpoint_id=job.endpoint_id,
            owner=self.owner,
            now=now,
            code=code,
            error=error,
            max_failures=rt.settings.webhook_max_failures,
        )
        log.warning("webhook %s to endpoint %s failed for good: %s", job.id, job.endpoint_id, error)
        if disabled:
            log.warning("webhook endpoint %s disabled after a run of failures", job.endpoint_id)


def wake_sender(rt: Runtime) -> None:
    """Tell this process's sender (if it runs one) that a delivery is due now."""
    sender = getattr(rt.workers, "webhooks", None)
    if isinstance(sender, WebhookSender):
        sender.wake()
