"""When the broker reads the third parties' policy pages, and what it does with them.

* :func:`check_policies` (``broker policies check``): every (or the named) connector's
  pages now, then its terms recorded (:func:`broker.flows.terms.record_terms`);
* :func:`ensure_checked` (the consent page): pages never checked, or checked longer
  ago than ``BROKER_POLICY_CHECK_INTERVAL`` (a page not retrieved: after at most
  ``_RETRY_FAILED`` seconds), are fetched first, waiting at most
  ``BROKER_POLICY_PAGE_WAIT`` seconds (a slower fetch finishes in the background; one
  fetch per connector at a time in a process);
* :func:`start_policy_checks` (``broker serve``): a daemon thread that checks every
  connector whose pages are due, at start and then every ten minutes at most.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from broker.core.connector import Connector
from broker.flows.policy_snapshots import check_pages, latest_checks
from broker.flows.terms import record_terms
from broker.runtime import Runtime
from broker.store.policy_models import PolicyChange, PolicyCheck

__all__ = [
    "CheckOutcome",
    "PolicyCheckTimer",
    "PolicyChecks",
    "check_policies",
    "ensure_checked",
    "start_policy_checks",
]

log = logging.getLogger("broker.policies")

_RETRY_FAILED = 300  # seconds before the consent page retries a page not retrieved
_inflight: dict[tuple[int, str], threading.Thread] = {}
_inflight_guard = threading.Lock()


@dataclass(frozen=True)
class CheckOutcome:
    connector_id: str
    checks: dict[str, PolicyCheck]
    terms_version: str
    change: PolicyChange | None


def check_policies(
    rt: Runtime, *, actor: str, connector_ids: list[str] | None = None
) -> list[CheckOutcome]:
    """Fetch every (or the named) connector's pages and record any change of terms."""
    connectors = [rt.registry.get(c) for c in connector_ids] if connector_ids else rt.registry.all()
    out = []
    for connector in connectors:
        checks = check_pages(rt, connector)
        change = record_terms(rt, connector, actor=actor)
        out.append(CheckOutcome(connector.id, checks, rt.terms_cache[connector.id][0], change))
    return out


def _stale(rt: Runtime, row: PolicyCheck | None, now: datetime) -> bool:
    if row is None:
        return True
    interval = rt.settings.policy_check_interval
    if interval == 0:
        return False
    limit = interval if row.digest else min(interval, _RETRY_FAILED)
    return (now - row.checked_at).total_seconds() > limit


@dataclass(frozen=True)
class PolicyChecks:
    """What the consent page shows: each page's last check (``None``: never checked)."""

    checks: dict[str, PolicyCheck | None]

    @property
    def checked_at(self) -> datetime | None:
        times = [row.checked_at for row in self.checks.values() if row is not None]
        return min(times) if times else None

    def retrieved(self, page: str) -> bool:
        row = self.checks.get(page)
        return row is not None and row.digest is not None


def _start_check(rt: Runtime, connector: Connector, pages: tuple[str, ...]) -> threading.Thread:
    key = (id(rt), connector.id)
    with _inflight_guard:
        running = _inflight.get(key)
        if running is not None and running.is_alive():
            return running

        def run() -> None:
            try:
                check_pages(rt, connector, pages)
                record_terms(rt, connector, actor="broker:consent-page")
            except Exception:  # a page check must never break the consent page
                log.exception("checking the policy pages of %s failed", connector.id)
            finally:
                with _inflight_guard:
                    _inflight.pop(key, None)

        thread = threading.Thread(target=run, name=f"policy-check-{connector.id}", daemon=True)
        _inflight[key] = thread
        thread.start()
        return thread


def ensure_checked(rt: Runtime, connector: Connector) -> PolicyChecks:
    """The connector's page checks for the consent page: pages never checked, or last
    checked longer ago than ``BROKER_POLICY_CHECK_INTERVAL``, are fetched first, for at
    most ``BROKER_POLICY_PAGE_WAIT`` seconds (a slower fetch finishes in the background)."""
    with Session(rt.engine) as session:
        checks = latest_checks(session, connector)
    now = rt.clock()
    stale = tuple(page for page, row in checks.items() if _stale(rt, row, now))
    if stale:
        _start_check(rt, connector, stale).join(rt.settings.policy_page_wait)
        with Session(rt.engine) as session:
            checks = latest_checks(session, connector)
    return PolicyChecks(checks)


@dataclass
class PolicyCheckTimer:
    """The periodic check of ``broker serve``; ``round_done`` is set after each round."""

    thread: threading.Thread
    stop_event: threading.Event
    round_done: threading.Event

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)


def start_policy_checks(rt: Runtime) -> PolicyCheckTimer | None:
    """``broker serve``: check the pages of every connector whose last check is older
    than ``BROKER_POLICY_CHECK_INTERVAL``, now and then every so often (a daemon thread;
    ``None`` when the interval is 0)."""
    interval = rt.settings.policy_check_interval
    if interval == 0:
        return None
    stop, done = threading.Event(), threading.Event()

    def due() -> list[str]:
        now = rt.clock()
        with Session(rt.engine) as session:
            return [
                c.id
                for c in rt.registry.all()
                if any(_stale(rt, row, now) for row in latest_checks(session, c).values())
            ]

    def loop() -> None:
        while not stop.is_set():
            try:
                if ids := due():
                    check_policies(rt, actor="broker:policy-check", connector_ids=ids)
            except Exception:  # keep checking next time
                log.exception("the periodic policy check failed")
            done.set()
            stop.wait(min(interval, 600))

    thread = threading.Thread(target=loop, name="policy-checks", daemon=True)
    thread.start()
    return PolicyCheckTimer(thread, stop, done)
