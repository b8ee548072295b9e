"""Delivery workers: threads that claim pending transfers and run them.

One :class:`DeliveryWorkers` per process (``broker serve`` starts it with
``BROKER_WORKERS`` threads on first use; ``broker worker`` runs one alone). Its
scheduler thread

- claims due transfers for idle threads (``claim_due``) and takes over those
  whose holder's lease ran out (``claim_lapsed``), every ``BROKER_WORKER_POLL``
  seconds or at once when woken (a new transfer was accepted here);
- (in a thread of its own) keeps this process's leases alive (``extend_leases``)
  every third of ``BROKER_LEASE_SECONDS``, so a slow delivery is never taken over
  while its worker lives, and a dead worker's leases run out;
- once a minute, revokes ``pending_confirmation`` connections past their
  deadline and finishes revocations whose process stopped mid-way.

A transfer accepted by a request that waits for its outcome, or accepted while a
thread of this process is idle, is leased to this process in the accepting
transaction and handed straight to a thread (:meth:`DeliveryWorkers.hand_off`): no
claim transaction, no second read of the row and no queue latency. Otherwise it
waits in the table for any worker process to claim.
``max_in_flight`` in a manifest's ``[delivery]`` bounds this process's
concurrent deliveries to that connector.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections import Counter
from dataclasses import replace

from broker.core.statuses import FINAL_TRANSFER_STATUSES
from broker.flows.engine import load, load_connection, load_connections, run_claim
from broker.flows.webhooks import WebhookSender
from broker.runtime import Runtime
from broker.store.jobs import Claim, claim_due, claim_lapsed, extend_leases, release
from broker.store.models import Transfer

__all__ = ["DeliveryWorkers", "ensure_workers", "start_workers"]

log = logging.getLogger("broker.workers")

_CHORES_EVERY = 60.0  # seconds between housekeeping rounds of the scheduler
_GONE = object()  # a claimed transfer whose connection no longer exists


def _owner_id() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"


class DeliveryWorkers:
    def __init__(self, rt: Runtime, *, threads: int, owner: str | None = None) -> None:
        self.rt = rt
        self.threads = max(1, threads)
        self.owner = owner or _owner_id()
        self._queue: queue.Queue[Claim | None] = queue.Queue()
        self._held: set[str] = set()  # leased to this process: queued or running
        self._running = 0
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pool: list[threading.Thread] = []
        self._limits: dict[str, threading.BoundedSemaphore] = {}
        self.counts: Counter[str] = Counter()  # outcomes this process recorded
        self._backlog = False  # the last look found at least as many due as it could take
        self._next_lapsed_look = 0.0  # monotonic time of the next look for lapsed leases

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> DeliveryWorkers:
        for i in range(self.threads):
            t = threading.Thread(target=self._work, name=f"delivery-{i}", daemon=True)
            t.start()
            self._pool.append(t)
        for target, name in ((self._schedule, "scheduler"), (self._beat, "heartbeat")):
            t = threading.Thread(target=target, name=f"delivery-{name}", daemon=True)
            t.start()
            self._pool.append(t)
        self.webhooks = WebhookSender(self.rt, owner=self.owner).start()  # to the host
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; let running deliveries finish; give queued ones back."""
        if (sender := getattr(self, "webhooks", None)) is not None:
            sender.stop()
        self._stopping.set()
        self._wake.set()
        for _ in range(self.threads):
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for t in self._pool:
            t.join(max(0.0, deadline - time.monotonic()))
        while True:
            try:
                claim = self._queue.get_nowait()
            except queue.Empty:
                break
            if claim is not None:
                self._give_back(claim)

    def _give_back(self, claim: Claim) -> None:
        if claim.lapsed:
            return  # its lease runs out again and another worker takes it over
        try:
            release(
                self.rt.engine, transfer_id=claim.transfer_id, owner=self.owner, at=self.rt.clock()
            )
        except Exception:
            log.exception("could not give back transfer %s", claim.transfer_id)
        with self._guard:
            self._held.discard(claim.transfer_id)

    # -- work -----------------------------------------------------------------------------

    def hand_off(self, transfer: Transfer) -> None:
        """Run a transfer this process leased when it accepted it (the row as written)."""
        with self._guard:
            self._held.add(transfer.id)
        self._queue.put(Claim(transfer_id=transfer.id, runs=1, transfer=transfer))

    def has_room(self) -> bool:
        """A thread here is idle: a transfer accepted now starts at once, so it may be
        leased to this process as it is accepted. (Not more: a lease whose holder dies
        ends a non-idempotent transfer ``outcome_unknown``, so a transfer is leased only
        when it is about to be sent, as a claim would.)"""
        return self._idle() > 0

    def wake(self) -> None:
        """A transfer is due: look for work now rather than at the next poll."""
        self._backlog = True
        self._wake.set()

    def _limit(self, connector_id: str) -> threading.BoundedSemaphore | None:
        try:
            cap = self.rt.registry.get(connector_id).manifest.delivery.max_in_flight
        except Exception:
            return None
        if cap is None:
            return None
        with self._guard:
            return self._limits.setdefault(connector_id, threading.BoundedSemaphore(cap))

    def _work(self) -> None:
        while True:
            claim = self._queue.get()
            if claim is None:
                return
            with self._guard:
                self._running += 1
            try:
                self._run(claim)
            except Exception:
                # The lease stays; it runs out and the transfer is taken over.
                log.exception("delivery of %s stopped unexpectedly", claim.transfer_id)
            finally:
                with self._guard:
                    self._running -= 1
                    self._held.discard(claim.transfer_id)
                if self._backlog:  # more is due than we could take: fill the slot now
                    self._wake.set()

    def _run(self, claim: Claim) -> None:
        if claim.transfer is None:
            t, conn = load(self.rt, claim.transfer_id)
        elif claim.connection is None:
            t, conn = claim.transfer, load_connection(self.rt, claim.transfer.connection_id)
        else:
            t, conn = claim.transfer, (None if claim.connection is _GONE else claim.connection)
        if t is None:
            return
        gate = self._limit(t.connector_id)
        if gate is not None:
            gate.acquire()
        try:
            done = run_claim(self.rt, claim, owner=self.owner, loaded=(t, conn))
        finally:
            if gate is not None:
                gate.release()
        if done is not None and done.status in FINAL_TRANSFER_STATUSES:
            self.counts[done.status] += 1

    # -- scheduling -----------------------------------------------------------------------

    def _idle(self) -> int:
        with self._guard:
            return self.threads - self._running - self._queue.qsize()

    def _beat(self) -> None:
        """Its own thread: a claim waiting for the database never delays a heartbeat."""
        while not self._stopping.wait(self.rt.settings.lease_seconds / 3):
            try:
                self._heartbeat()
            except Exception:
                log.exception("could not extend this process's leases")

    def _schedule(self) -> None:
        next_chores = time.monotonic()
        while not self._stopping.is_set():
            self._wake.wait(self.rt.settings.worker_poll)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._claim()
                if time.monotonic() >= next_chores:
                    self._chores()
                    next_chores = time.monotonic() + _CHORES_EVERY
            except Exception:
                log.exception("the delivery scheduler could not reach the database")

    def _chores(self) -> None:
        """Connection housekeeping that must not wait for an operator: unconfirmed
        connections past their deadline are revoked, interrupted revocations finished."""
        from broker.flows.confirm import expire_unconfirmed
        from broker.flows.revoke import resume_interrupted_revocations

        expire_unconfirmed(self.rt)
        resume_interrupted_revocations(self.rt)

    def _heartbeat(self) -> None:
        with self._guard:
            held = list(self._held)
        extend_leases(
            self.rt.engine,
            owner=self.owner,
            ids=held,
            until=self.rt.clock() + self.rt.lease_duration(),
        )

    def _claim(self) -> None:
        free = self._idle()
        if free <= 0:
            return
        now = self.rt.clock()
        claims: list[Claim] = []
        # A lease runs out on the scale of BROKER_LEASE_SECONDS: looking for lapsed
        # ones once a poll interval is enough, not on every wake (each look is a
        # write transaction).
        if time.monotonic() >= self._next_lapsed_look:
            self._next_lapsed_look = time.monotonic() + self.rt.settings.worker_poll
            claims = claim_lapsed(
                self.rt.engine,
                owner=self.owner,
                now=now,
                until=now + self.rt.lease_duration(),
                limit=free,
            )
        ordered = [c.id for c in self.rt.registry.all() if c.manifest.delivery.ordered]
        now = self.rt.clock()  # the first claim may have waited for the database
        claims += claim_due(
            self.rt.engine,
            owner=self.owner,
            now=now,
            until=now + self.rt.lease_duration(),
            limit=free - len(claims),
            ordered=ordered,
        )
        self._backlog = len(claims) >= free
        # One read for the batch's connections (and tokens), not one per transfer.
        states = load_connections(self.rt, {c.transfer.connection_id for c in claims})
        claims = [
            replace(c, connection=states.get(c.transfer.connection_id, _GONE)) for c in claims
        ]
        with self._guard:
            self._held.update(c.transfer_id for c in claims)
        for c in claims:
            self._queue.put(c)


def start_workers(rt: Runtime, *, threads: int) -> DeliveryWorkers:
    """Start this process's delivery workers (``broker serve``'s on first use, ``broker
    worker``'s at start), nudged by the other processes when they queue a transfer."""
    rt.workers = DeliveryWorkers(rt, threads=threads).start()
    rt.wakeups()  # claims at once when another process accepts a transfer
    return rt.workers


def ensure_workers(rt: Runtime) -> DeliveryWorkers | None:
    """This process's workers, started on first use; None with ``BROKER_WORKERS=0``."""
    if rt.workers is None and rt.settings.workers > 0:
        with rt._workers_guard:
            if rt.workers is None:
                start_workers(rt, threads=rt.settings.workers)
    return rt.workers
