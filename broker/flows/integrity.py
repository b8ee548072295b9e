"""The log's integrity as the console and the API show it: never a whole-log pass per request.

Each verification run is a row (``AuditVerification``). ``integrity_status`` answers
from the last completed run, after verifying what was appended since it, incrementally
from its position: in the request when that is at most ``SYNC_LIMIT`` entries, else as a
background run (the answer then says so, with its progress). A full re-verification is
a background run started by ``start_full`` (the page's button, ``POST
/v1/audit/verifications``); its result is kept as an ``audit.verified`` event.

What an incremental run guarantees: every entry after the last verified position links
to it and recomputes, the tree over them matches every signed checkpoint past it, the
head file agrees; and the last verified entry still has the hash it had. It does not
re-read entries before that position: a change to one of them (with the chain
recomputed up to the last verified entry, or not) shows only in a full run. A failed run
stays the answer until a full run succeeds.

Runs happen in this process (a thread; the full pass may use worker processes); a run
left ``running`` by a process that died is marked ``interrupted`` when the next full run
starts, and only a run of this process is shown as in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

from sqlmodel import Session

from broker.core.audit_chain import VerifyResult
from broker.core.errors import Conflict, InvariantBroken, NotFound
from broker.flows.verification import Position, check_log
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.audit_scan import hash_at, last_seq
from broker.store.db import session_scope
from broker.store.integrity_runs import (
    latest_run,
    mark_interrupted,
    prune_incremental,
    record_progress,
)
from broker.store.verification_models import AuditVerification

__all__ = [
    "SYNC_LIMIT",
    "find_verification",
    "integrity_status",
    "run_verification",
    "start_full",
    "verification_dict",
    "wait_for",
]

SYNC_LIMIT = 20_000
"""Entries an incremental run may check inside a request; beyond, it runs in the background."""

log = logging.getLogger("broker.audit")
_JOBS: dict[tuple[int, int], threading.Thread] = {}  # (id(engine), run id) -> thread
_LOCK = threading.Lock()


def _now(rt: Runtime) -> datetime:
    return rt.clock()


def _latest(rt: Runtime, *, status: str) -> AuditVerification | None:
    with Session(rt.engine) as session:
        return latest_run(session=session, status=status)


def _recorded(run: AuditVerification | None, run_id: int) -> AuditVerification:
    """Run ``run_id`` as read back; it was written by this process and is never
    deleted while it may be read (only completed incremental runs are pruned)."""
    if run is None:
        raise InvariantBroken(
            "a verification run vanished while it was in use",
            details={"verification_id": run_id},
        )
    return run


def _position(run: AuditVerification | None) -> Position | None:
    if run is None or not run.ok or run.to_seq is None or run.chain_hash is None:
        return None
    if run.to_seq and not run.frontier:
        return None
    edge = tuple(bytes.fromhex(h) for h in run.frontier)
    return Position(run.to_seq, run.chain_hash, edge, run.checkpoint_size)


def _running(rt: Runtime) -> AuditVerification | None:
    with _LOCK:
        alive = [rid for (eid, rid), t in _JOBS.items() if eid == id(rt.engine) and t.is_alive()]
    if not alive:
        return None
    with Session(rt.engine) as session:
        return session.get(AuditVerification, max(alive))


def _create(rt: Runtime, kind: str, since: Position | None, actor: str | None) -> int:
    with session_scope(rt.engine) as session:
        run = AuditVerification(
            kind=kind, status="running", actor=actor, started_at=_now(rt),
            from_seq=since.seq if since else 0, frontier=[],
        )  # fmt: skip
        session.add(run)
        session.flush()
        if run.id is None:
            raise InvariantBroken("a new verification run was given no id")
        return run.id


def run_verification(
    rt: Runtime, run_id: int, since: Position | None, *, event: bool = False
) -> AuditVerification:
    """Carry out run ``run_id`` (from ``since``; None: every entry) and record its result
    (and, with ``event``, an ``audit.verified`` event)."""
    started = time.monotonic()
    last_write = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last_write[0] < 0.5 and done < total:
            return
        last_write[0] = now
        with session_scope(rt.engine) as session:
            record_progress(session=session, run_id=run_id, done=done, total=total)

    try:
        result, reached = check_log(rt, since=since, progress=progress)
    except Exception as exc:  # recorded, not raised: a background run has no caller
        # The row (and the audit.verified event) get a stable word and the type;
        # the exception's text, which may quote a row or a path, only the operator log.
        log.exception("audit verification %s could not be carried out", run_id)
        message = f"the verification could not be carried out ({type(exc).__name__})"
        result = VerifyResult(False, 0, None, None, "error", message)
        reached = None
    took = int((time.monotonic() - started) * 1000)
    with session_scope(rt.engine) as session:
        run = _recorded(session.get(AuditVerification, run_id), run_id)
        run.status, run.finished_at, run.duration_ms = "done", _now(rt), took
        run.ok, run.checked = result.ok, result.checked
        run.problem, run.first_bad_seq, run.message = (
            result.problem,
            result.first_bad_seq,
            result.message,
        )
        run.done = run.total = max(run.total, result.checked)
        if result.head is not None:  # the last entry vouched for, even by a failed run
            run.to_seq, run.chain_hash = result.head.seq, result.head.hash
        if reached is not None:  # the position the next incremental run continues from
            run.to_seq, run.chain_hash = reached.seq, reached.hash
            run.frontier = [h.hex() for h in reached.edge]
            run.checkpoint_size = reached.checkpoint
        session.add(run)
        if event:
            append_event(
                session, head_file=rt.settings.audit_head_file, time=_now(rt),
                event="audit.verified", actor=run.actor or "broker",
                outcome="intact" if result.ok else "failed",
                details={
                    "verification_id": run_id, "kind": run.kind, "ok": result.ok,
                    "checked": result.checked, "to_seq": run.to_seq,
                    "checkpoint_size": run.checkpoint_size, "problem": result.problem,
                    "first_bad_seq": result.first_bad_seq, "duration_ms": took,
                },
            )  # fmt: skip
        session.flush()
        session.refresh(run)
        session.expunge(run)
        if run.kind == "incremental":
            prune_incremental(session=session, keep=KEEP_INCREMENTAL)
    return run


KEEP_INCREMENTAL = 100
"""Completed incremental runs kept (every full run is kept, and is in the log too)."""


def _background(rt: Runtime, run_id: int, since: Position | None, event: bool) -> None:
    try:
        run_verification(rt, run_id, since, event=event)
    except Exception:  # e.g. the database went away (shutdown): the row stays "running"
        log.exception("audit verification %s could not be recorded", run_id)


def _start(rt: Runtime, kind: str, since: Position | None, actor: str | None) -> int:
    run_id = _create(rt, kind, since, actor)
    thread = threading.Thread(
        target=_background, args=(rt, run_id, since, kind == "full"),
        name=f"audit-verification-{run_id}", daemon=True,
    )  # fmt: skip
    with _LOCK:
        for key in [k for k, t in _JOBS.items() if not t.is_alive()]:
            del _JOBS[key]
        _JOBS[(id(rt.engine), run_id)] = thread
    thread.start()
    return run_id


def start_full(rt: Runtime, *, actor: str | None) -> AuditVerification:
    """Start a full re-verification in the background; ``Conflict`` if one is running."""
    if (current := _running(rt)) is not None and current.kind == "full":
        raise Conflict(
            "a full verification is already running",
            details={"verification_id": current.id},
        )
    with session_scope(rt.engine) as session:  # runs a dead process left behind
        mark_interrupted(session=session, alive=_alive_ids(rt))
    run_id = _start(rt, "full", None, actor)
    with Session(rt.engine) as session:
        return _recorded(session.get(AuditVerification, run_id), run_id)


def _alive_ids(rt: Runtime) -> list[int]:
    with _LOCK:
        return [rid for (eid, rid), t in _JOBS.items() if eid == id(rt.engine) and t.is_alive()]


def find_verification(rt: Runtime, run_id: int) -> AuditVerification:
    """Run ``run_id``; ``NotFound`` if there is none."""
    with Session(rt.engine) as session:
        run = session.get(AuditVerification, run_id)
    if run is None:
        raise NotFound("no such verification", details={"verification_id": run_id})
    return run


def wait_for(rt: Runtime, run_id: int, timeout: float | None = None) -> AuditVerification:
    """Wait for background run ``run_id`` of this process to finish; its row."""
    with _LOCK:
        thread = _JOBS.get((id(rt.engine), run_id))
    if thread is not None:
        thread.join(timeout)
    with Session(rt.engine) as session:
        run = session.get(AuditVerification, run_id)
    if run is None:
        raise LookupError(run_id)
    return run


def integrity_status(rt: Runtime, *, actor: str | None) -> dict[str, Any]:
    """The last completed verification, brought up to date with what was appended since
    (see the module doc), and the run in progress, if any."""
    last = _latest(rt, status="done")
    top = last_seq(rt.engine)
    running = _running(rt)
    if last is None or last.ok:
        since = _position(last)
        pending = top - (since.seq if since else 0)
        # Something to verify: new entries, fewer than verified (cut off), or the last
        # verified entry no longer as it was (one row read).
        changed = (
            since is not None
            and 0 < since.seq <= top
            and hash_at(rt.engine, since.seq) != since.hash
        )
        if last is None or pending or changed:
            if pending <= SYNC_LIMIT:
                kind = "incremental" if since else "full"
                last = run_verification(rt, _create(rt, kind, since, actor), since)
            elif running is None:
                _start(rt, "incremental" if since else "full", since, actor)
                running = _running(rt)
    return {
        "last": verification_dict(last) if last else None,
        "running": verification_dict(running) if running else None,
        "log_size": top,
        "unverified": max(0, top - ((last.to_seq or 0) if last and last.ok else 0)),
    }


def verification_dict(run: AuditVerification) -> dict[str, Any]:
    return {
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "actor": run.actor,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_ms": run.duration_ms,
        "from_seq": run.from_seq,
        "to_seq": run.to_seq,
        "checkpoint_size": run.checkpoint_size,
        "done": run.done,
        "total": run.total,
        "ok": run.ok,
        "checked": run.checked,
        "head": {"seq": run.to_seq, "hash": run.chain_hash} if run.to_seq else None,
        "problem": run.problem,
        "first_bad_seq": run.first_bad_seq,
        "message": run.message,
    }
