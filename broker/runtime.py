"""Everything a running broker holds, built once from Settings."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import EntryPoint
from typing import Any

import httpx
from sqlalchemy import Engine

from broker.core.catalog import Catalog, default_catalog, load_catalog
from broker.core.checkpoint import SigningKeyRing
from broker.core.connector import Connector
from broker.core.errors import ConfigurationError
from broker.core.policy import Policy, load_policy
from broker.core.registry import ConnectorRegistry, load_registry, refuse_forbidden_uses
from broker.core.vault import KeyRing, TokenVault
from broker.metrics import BrokerMetrics
from broker.settings import Settings
from broker.store.db import create_db_engine, schema_revisions, upgrade_schema
from broker.store.types import utcnow
from broker.store.wakeups import Wakeups

__all__ = ["Runtime", "build_runtime", "catalog_of"]


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    catalog: Catalog
    registry: ConnectorRegistry
    vault: TokenVault
    http: httpx.Client
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    created: list[str] = field(default_factory=list)
    policy: Policy = field(default_factory=load_policy)
    _locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _signing: tuple[int, SigningKeyRing] | None = field(default=None, repr=False)
    # The delivery workers of this process (broker.flows.workers), started on first use.
    workers: Any = field(default=None, repr=False)
    _workers_guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _outcome_events: dict[str, threading.Event] = field(default_factory=dict, repr=False)
    _outcome_results: dict[str, tuple[Any, str | None]] = field(default_factory=dict, repr=False)
    _wakeups: Wakeups | None = field(default=None, repr=False)
    _wakeups_guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def outcome_event(self, transfer_id: str) -> threading.Event:
        """Set when this process changes the transfer (outcome, reschedule); waiters
        for a transfer run elsewhere poll the database as well."""
        with self._locks_guard:
            return self._outcome_events.setdefault(transfer_id, threading.Event())

    def signal_outcome(
        self, transfer_id: str, *, transfer: Any = None, unrecorded: str | None = None
    ) -> None:
        """Wake this process's waiters, handing them the stored ``transfer`` (saves a
        read); ``unrecorded``: the outcome that was reached but could not be written
        (the waiter answers 503 instead of waiting on)."""
        with self._locks_guard:
            ev = self._outcome_events.pop(transfer_id, None)
            if ev is not None and (transfer is not None or unrecorded is not None):
                self._outcome_results[transfer_id] = (transfer, unrecorded)
        if ev is not None:
            ev.set()
        if self._wakeups is not None:  # a waiter may be in another process
            self._wakeups.done(transfer_id)

    def wakeups(self) -> Wakeups:
        """This process's nudges to and from the other broker processes sharing the
        database (:mod:`broker.store.wakeups`), started on first use."""
        if self._wakeups is None:
            with self._wakeups_guard:  # (not the workers' guard: they start it holding theirs)
                if self._wakeups is None:
                    self._wakeups = Wakeups(
                        self.engine,
                        self.settings.home,
                        on_work=self._nudged_work,
                        on_done=self._nudged_done,
                    ).start()
        return self._wakeups

    def _nudged_work(self) -> None:
        if self.workers is not None:
            self.workers.wake()

    def _nudged_done(self, transfer_ids: list[str]) -> None:
        """Another process wrote these outcomes: its waiters here read them again."""
        with self._locks_guard:
            events = [self._outcome_events.pop(t, None) for t in transfer_ids]
        for ev in events:
            if ev is not None:
                ev.set()

    def forget_outcome(self, transfer_id: str) -> tuple[Any, str | None]:
        """Drop the waiter's event; returns what the signal handed over, if anything:
        ``(transfer or None, unrecorded outcome or None)``."""
        with self._locks_guard:
            self._outcome_events.pop(transfer_id, None)
            return self._outcome_results.pop(transfer_id, (None, None))

    _metrics: Any = field(default=None, repr=False)
    # Policies (broker.flows.terms): each connector's current terms version, read at
    # (monotonic time); the guarded transport the policy pages are fetched through.
    terms_cache: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    transport: httpx.BaseTransport | None = field(default=None, repr=False)

    @property
    def metrics(self) -> BrokerMetrics:
        """This process's Prometheus metrics (created on first use)."""
        if self._metrics is None:
            with self._workers_guard:
                if self._metrics is None:
                    self._metrics = BrokerMetrics(self.engine, self.clock)
        return self._metrics

    def lease_duration(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    _receipt: tuple[int, SigningKeyRing] | None = field(default=None, repr=False)

    def signing_keys(self) -> SigningKeyRing:
        """The checkpoint signing key ring, re-read whenever its file changed (a
        ``broker keys rotate --signing`` in another process takes effect at once)."""
        path = self.settings.resolved_signing_keys_file
        mtime = path.stat().st_mtime_ns
        if self._signing is None or self._signing[0] != mtime:
            self._signing = (mtime, SigningKeyRing.load(path))
        return self._signing[1]

    def receipt_keys(self) -> SigningKeyRing:
        """The consent-receipt signing key ring (its own keys, not the checkpoints'),
        re-read whenever its file changed."""
        path = self.settings.resolved_receipt_keys_file
        mtime = path.stat().st_mtime_ns
        if self._receipt is None or self._receipt[0] != mtime:
            self._receipt = (mtime, SigningKeyRing.load(path))
        return self._receipt[1]

    def connection_lock(self, connection_id: str) -> threading.Lock:
        """The in-process lock that lets one token refresh run per connection."""
        with self._locks_guard:
            return self._locks.setdefault(connection_id, threading.Lock())

    def close(self) -> None:
        if self.workers is not None:
            self.workers.stop()
        if self._wakeups is not None:
            self._wakeups.stop()
        self.http.close()
        self.engine.dispose()


def _ensure_home(settings: Settings, created: list[str]) -> None:
    home = settings.home
    if not home.exists():
        home.mkdir(parents=True, mode=0o700)
        created.append(f"created broker home {home.resolve()}")


def catalog_of(settings: Settings) -> Catalog:
    """The data catalog the broker runs with: ``BROKER_CATALOG``'s file, or the built-in
    one (the one loader; the runtime and the CLI commands without a runtime use it)."""
    return load_catalog(settings.catalog) if settings.catalog else default_catalog()


def build_runtime(
    settings: Settings,
    *,
    builtins: Iterable[Connector] = (),
    plugins: Iterable[EntryPoint] | None = None,
    transport: httpx.BaseTransport | None = None,
    upgrade: bool | None = None,
) -> Runtime:
    """Open (and on the embedded default, create) everything the broker needs.

    ``upgrade`` defaults to True for the embedded SQLite database; a
    configured database must be upgraded with ``broker db upgrade`` first.
    """
    created: list[str] = []
    _ensure_home(settings, created)
    ring, made = KeyRing.load_or_create(settings.resolved_keys_file)
    if made:
        created.append(
            f"created token-encryption key file {settings.resolved_keys_file.resolve()} (0600)"
        )
    signing, made = SigningKeyRing.load_or_create(
        settings.resolved_signing_keys_file, settings.resolved_checkpoint_origin
    )
    if made:
        created.append(
            f"created checkpoint signing key file {settings.resolved_signing_keys_file.resolve()}"
            f" (0600); verifier key {signing.verifiers()[0].vkey}"
        )
    receipts, made = SigningKeyRing.load_or_create(
        settings.resolved_receipt_keys_file, settings.resolved_receipt_key_name
    )
    if made:
        created.append(
            f"created consent-receipt signing key file "
            f"{settings.resolved_receipt_keys_file.resolve()} (0600); verifier key "
            f"{receipts.verifiers()[0].vkey}"
        )
    policy = load_policy(settings.policy_file)
    catalog = catalog_of(settings)
    url = settings.resolved_database_url
    db_existed = not settings.is_embedded_database or (settings.home / "broker.db").exists()
    if not db_existed:
        # Created 0600 before SQLite opens it: its -wal and -shm files take this mode.
        os.close(os.open(settings.home / "broker.db", os.O_WRONLY | os.O_CREAT, 0o600))
    engine = create_db_engine(url)
    if upgrade is None:
        upgrade = settings.is_embedded_database
    if upgrade:
        upgrade_schema(engine)
        if not db_existed:
            db_file = settings.home / "broker.db"
            created.append(f"created SQLite database {db_file.resolve()} (0600)")
    else:
        current, head = schema_revisions(engine)
        if current != head:
            engine.dispose()
            state = "has no broker schema yet" if current is None else f"is at revision {current}"
            raise ConfigurationError(
                f"the database {state}; this broker needs {head}: run `broker db upgrade` first"
            )
    registry = load_registry(
        catalog, directories=settings.connector_dirs, builtins=builtins, plugins=plugins
    )
    refuse_forbidden_uses(registry, policy)
    if transport is None:
        # Every outgoing request that opens a socket (OAuth token, refresh and revoke
        # calls as well as connector requests) resolves once, refuses non-public
        # addresses unless the host itself is loopback, and connects to what it checked.
        from broker.core.addresses import PinnedTransport

        transport = PinnedTransport(trust_env=settings.http_trust_env)
    http = httpx.Client(
        timeout=settings.http_timeout,
        transport=transport,
        follow_redirects=False,
        headers={"User-Agent": f"scoped-broker (+{settings.resolved_base_url})"},
        trust_env=settings.http_trust_env,
    )
    rt = Runtime(
        settings=settings,
        engine=engine,
        catalog=catalog,
        registry=registry,
        vault=TokenVault(ring, path=settings.resolved_keys_file),
        http=http,
        created=created,
        policy=policy,
        transport=transport,
    )
    from broker.flows.terms import record_loaded_terms  # flows build on the runtime

    record_loaded_terms(rt)  # a connector's terms are recorded (and compared) at load
    from broker.flows.log_format import start_format

    start_format(rt)  # a log begun in format 1: the log.format handover entry, once
    return rt
