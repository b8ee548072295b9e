"""The delivery engine against process faults: real ``broker worker`` processes, a real
third party on loopback (:mod:`tests.integration.receiver`), and the test's database.

- a worker killed (SIGKILL) mid-delivery: after takeover the transfer ends
  ``outcome_unknown`` (non-idempotent third party) or is sent again under the same
  ``Idempotency-Key`` and stored once (idempotent one); never ``failed`` for something
  that arrived, never ``delivered`` for something that did not;
- ``broker transfers reconcile`` and a second worker racing a live lease change nothing;
- three workers under load: every transfer delivered exactly once, the audit log
  verifies, checkpoint sizes never go down;
- a 429 with ``Retry-After: 3600`` holds no worker: the transfer is rescheduled and the
  same single worker thread delivers the next one.

Nothing here sleeps for timing: tests wait for an event (the receiver saw a request)
or poll the database in bounded loops.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from sqlmodel import Session, col, select

from broker.core.gateway import TransferRequest
from broker.flows.audit import verify_log
from broker.flows.checkpoints import start_checkpointing
from broker.flows.engine import LAPSED
from broker.flows.reconcile import reconcile
from broker.flows.share import accept_transfer
from broker.runtime import Runtime, build_runtime
from broker.store.db import session_scope
from broker.store.jobs import claim_due, claim_lapsed
from broker.store.merkle_models import CheckpointRow
from broker.store.models import AuditRow, Connection, ConnectionToken, ConsentRecord, Transfer
from tests.integration.receiver import ACCESS_TOKEN, Receiver, write_connector

PLAIN = "recv-plain"  # no [delivery] idempotent: a lapsed run ends outcome_unknown
IDEMPOTENT = "recv-idem"  # [delivery] idempotent = true: a lapsed run is sent again
LEASE_SECONDS = 2
STARTUP = 60.0  # a worker process on a busy 2-core machine: import, connect, first claim
T = TypeVar("T")


# -- worker processes ------------------------------------------------------------------


@dataclass
class Worker:
    """One ``broker worker`` subprocess; stdout and stderr go to files."""

    name: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def holds(self, lease_owner: str | None) -> bool:
        """Whether a lease owner id is this process's (``host:pid:random``)."""
        return lease_owner is not None and lease_owner.split(":")[-2] == str(self.pid)

    def logs(self) -> str:
        def read(p: Path) -> str:
            return p.read_text(errors="replace") if p.exists() else ""

        code = self.proc.poll()
        state = "running" if code is None else f"exited {code}"
        return (
            f"--- worker {self.name} (pid {self.pid}, {state}) stdout:\n{read(self.out)}"
            f"--- stderr:\n{read(self.err)[-6000:]}"
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (running deliveries finish, the head file is flushed), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


@dataclass
class Faults:
    rt: Runtime
    receiver: Receiver
    environ: dict[str, str]
    logs: Path
    workers: list[Worker] = field(default_factory=list)
    commands: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    # -- processes

    def worker(self, threads: int = 1, lease: float | None = None) -> Worker:
        name = f"w{len(self.workers) + 1}"
        env = dict(self.environ)
        if lease is not None:
            env["BROKER_LEASE_SECONDS"] = str(lease)
        out, err = self.logs / f"{name}.out", self.logs / f"{name}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(  # noqa: S603  (our own interpreter and CLI)
                [sys.executable, "-m", "broker.cli", "worker", "--threads", str(threads)],
                env=env,
                stdout=o,
                stderr=e,
                stdin=subprocess.DEVNULL,
                cwd=self.logs,
            )
        w = Worker(name, proc, out, err)
        self.workers.append(w)
        return w

    def command(self, *argv: str) -> subprocess.Popen[bytes]:
        """Another ``broker`` command, a process of its own on the same home and database."""
        return self.command_argv([sys.executable, "-m", "broker.cli", *argv])

    def command_argv(self, argv: list[str]) -> subprocess.Popen[bytes]:
        name = f"cmd{len(self.commands) + 1}"
        out = self.logs / f"{name}.log"
        with out.open("wb") as o:
            proc = subprocess.Popen(  # noqa: S603
                argv,
                env=self.environ,
                stdout=o,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.logs,
            )
        self.commands.append((name, proc, out))
        return proc

    def all_logs(self) -> str:
        parts = [w.logs() for w in self.workers]
        for name, proc, out in self.commands:
            parts.append(f"--- {name} (exit {proc.poll()}):\n{out.read_text(errors='replace')}")
        return "\n".join(parts)

    def wait_until(self, what: str, check: Callable[[], T], timeout: float) -> T:
        """Poll ``check`` (short waits, bounded) until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{self.all_logs()}")
            time.sleep(0.05)  # a poll interval, not a timing assumption

    def wait_ready(self, w: Worker) -> None:
        def ready() -> bool:
            if w.proc.poll() is not None:
                pytest.fail(f"worker {w.name} exited early\n{w.logs()}")
            return "running as" in w.out.read_text(errors="replace")

        self.wait_until(f"worker {w.name} to start", ready, STARTUP)

    def wait_event(self, what: str, event_wait: Callable[[float], bool], timeout: float) -> None:
        if not event_wait(timeout):
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{self.all_logs()}")

    # -- data

    def connect(self, connector_id: str) -> str:
        """An active connection with its consent and a token that never expires,
        written the way the OAuth callback writes them."""
        rt = self.rt
        manifest = rt.registry.get(connector_id).manifest
        cid, consent_id = "conn_" + secrets.token_hex(8), "cons_" + secrets.token_hex(8)
        now = rt.clock()
        with session_scope(rt.engine) as session:
            session.add(
                Connection(
                    id=cid,
                    user_id="user-1",
                    connector_id=connector_id,
                    status="active",
                    activated_at=now,
                    consent_id=consent_id,
                    settings={},
                )
            )
            session.flush()
            session.add(
                ConsentRecord(
                    id=consent_id,
                    connection_id=cid,
                    user_id="user-1",
                    connector_id=connector_id,
                    connector_name=manifest.name,
                    granted_categories=["user.content.work_items"],
                    declined_categories=[],
                    purposes={d.category: d.purpose for d in manifest.data},
                    privacy_policy_url=manifest.privacy_policy_url,
                    terms_url=manifest.terms_url,
                    manifest_digest=manifest.digest(),
                    platform_policy_version="1",
                    scopes=[],
                    consented_at=now,
                )
            )
            session.add(
                ConnectionToken(
                    connection_id=cid,
                    key_id=rt.vault.ring.active,
                    access_token=rt.vault.seal(
                        ACCESS_TOKEN, connection_id=cid, kind="access_token"
                    ),
                    expires_at=None,
                    updated_at=now,
                )
            )
        return cid

    def accept(self, connection_id: str, item: str) -> str:
        request = TransferRequest(
            action="push", data={"work_item": {"id": item, "title": f"Item {item}"}}
        )
        t, new = accept_transfer(self.rt, connection_id=connection_id, request=request, actor="t")
        assert new and t.status == "pending"
        return t.id

    def transfer(self, transfer_id: str) -> Transfer:
        with Session(self.rt.engine) as db:
            t = db.get(Transfer, transfer_id)
        assert t is not None
        return t

    def final(self, transfer_id: str, timeout: float = 60.0) -> Transfer:
        def done() -> Transfer | None:
            t = self.transfer(transfer_id)
            return t if t.status != "pending" else None

        return self.wait_until(f"transfer {transfer_id} to end", done, timeout)

    def events(self, transfer_id: str) -> list[str]:
        with Session(self.rt.engine) as db:
            rows = db.exec(
                select(AuditRow.event)
                .where(AuditRow.transfer_id == transfer_id)
                .order_by(col(AuditRow.seq))
            ).all()
        return list(rows)

    def assert_broker_agrees_with_receiver(self, transfer_ids: list[str]) -> None:
        """Never delivered-in-broker and absent at the receiver; never failed for
        something that arrived; nothing stored twice."""
        for tid in transfer_ids:
            t = self.transfer(tid)
            copies = self.receiver.copies(tid)
            assert copies <= 1, (tid, t.status, copies)
            if t.status == "delivered":
                assert copies == 1, f"{tid} delivered in the broker, absent at the receiver"
            if t.status == "failed":
                assert copies == 0, f"{tid} failed in the broker, stored at the receiver"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def faults(
    make_settings, database_url: str, tmp_path: Path, receiver: Receiver
) -> Iterator[Faults]:
    connectors = tmp_path / "connectors"
    write_connector(connectors, receiver, id=PLAIN, idempotent=False)
    write_connector(connectors, receiver, id=IDEMPOTENT, idempotent=True)
    common = {
        "connectors_path": str(connectors),
        "lease_seconds": LEASE_SECONDS,
        "worker_poll": 0.1,
        "http_timeout": 30,  # a held answer is slow, not lost
        "checkpoint_every": 20,
        "checkpoint_interval": 0,
    }
    # The test process accepts and inspects; it delivers nothing (workers=0).
    settings = make_settings(workers=0, **common)
    rt = build_runtime(settings, plugins=[], upgrade=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    environ.update(
        {
            "BROKER_HOME": str(settings.home.resolve()),  # the same key files
            "BROKER_DATABASE_URL": database_url,
            "BROKER_RETURN_URL_ALLOWLIST": settings.return_url_allowlist,
            "PYTHONUNBUFFERED": "1",
            **{f"BROKER_{k.upper()}": str(v) for k, v in common.items()},
        }
    )
    logs = tmp_path / "workers"
    logs.mkdir()
    f = Faults(rt=rt, receiver=receiver, environ=environ, logs=logs)
    try:
        yield f
    finally:
        for w in f.workers:
            w.kill()
        for _, proc, _ in f.commands:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        if f.workers or f.commands:
            print(f.all_logs())  # shown by pytest when the test failed
        rt.close()


# -- 1. kill -9 mid-delivery ---------------------------------------------------------------


def _kill_mid_delivery(faults: Faults, connector_id: str) -> tuple[str, str]:
    """Worker A receives a transfer, the receiver holds its answer, A is killed, then the
    receiver stores the item. Returns (transfer id, A's lease owner id)."""
    rx = faults.receiver
    tid = faults.accept(faults.connect(connector_id), "W-1")
    rx.hold_next = 1
    a = faults.worker(threads=1)
    faults.wait_event("the delivery to reach the receiver", rx.arrived.wait, STARTUP)
    held = faults.transfer(tid)
    assert held.status == "pending" and a.holds(held.lease_owner), held.lease_owner
    a.kill()
    rx.release.set()  # the third party stores what it got, answering nobody
    faults.wait_event("the receiver to store the item", rx.item_stored.wait, 10)
    assert rx.copies(tid) == 1
    assert faults.transfer(tid).status == "pending"  # its worker is gone, nobody decided
    return tid, held.lease_owner or ""


def test_kill_mid_delivery_non_idempotent_ends_outcome_unknown(faults: Faults) -> None:
    tid, dead = _kill_mid_delivery(faults, PLAIN)
    b = faults.worker(threads=1)
    t = faults.final(tid)
    assert t.status == "outcome_unknown", (t.status, t.reason)  # never failed: it arrived
    assert t.reason == LAPSED
    assert t.lease_owner is None and t.payload_sealed is None
    assert t.runs == 2  # claimed by A, taken over by B
    assert [a.get("error") for a in t.attempts][-1] == LAPSED
    # not sent again: the receiver saw it once, and holds it once
    assert faults.receiver.keys_received() == [tid]
    assert faults.receiver.copies(tid) == 1
    assert faults.events(tid) == ["transfer.pending", "transfer.outcome_unknown"]
    faults.assert_broker_agrees_with_receiver([tid])
    assert b.stop() == 0
    assert verify_log(faults.rt).ok
    assert dead != ""


def test_kill_mid_delivery_idempotent_resends_under_the_same_key(faults: Faults) -> None:
    faults.receiver.dedupe = True
    tid, _ = _kill_mid_delivery(faults, IDEMPOTENT)
    (first,) = faults.receiver.stored[tid]
    b = faults.worker(threads=1)
    t = faults.final(tid)
    assert t.status == "delivered", (t.status, t.reason)
    assert t.runs == 2
    # sent twice under the transfer id, stored once; the broker records the stored item
    assert faults.receiver.keys_received() == [tid, tid]
    assert faults.receiver.copies(tid) == 1
    assert t.response_id == first["id"]
    assert t.response_status == 200  # the receiver's "already have it"
    assert LAPSED in [a.get("error") for a in t.attempts]
    assert all(r.authorization == f"Bearer {ACCESS_TOKEN}" for r in faults.receiver.received)
    assert faults.events(tid) == ["transfer.pending", "transfer.delivered"]
    faults.assert_broker_agrees_with_receiver([tid])
    assert b.stop() == 0
    assert verify_log(faults.rt).ok


# -- 2. a live lease is left alone ---------------------------------------------------------


def test_reconcile_and_a_rival_worker_leave_a_live_lease_alone(faults: Faults) -> None:
    rx, rt = faults.receiver, faults.rt
    tid = faults.accept(faults.connect(PLAIN), "W-1")
    rx.hold_next = 1
    a = faults.worker(threads=1)
    faults.wait_event("the delivery to reach the receiver", rx.arrived.wait, STARTUP)
    first = faults.transfer(tid)
    assert a.holds(first.lease_owner)
    assert first.lease_until is not None
    b = faults.worker(threads=2)  # a rival that looks for lapsed leases every 0.1 s
    faults.wait_ready(b)
    # Hold the answer past the lease A took: only its heartbeat keeps the lease alive.
    past = max(first.lease_until, rt.clock()) + timedelta(seconds=1)
    faults.wait_until("the first lease to run out", lambda: rt.clock() > past, 30)
    assert reconcile(rt) == []
    now = rt.clock()
    until = now + timedelta(minutes=1)
    assert claim_lapsed(rt.engine, owner="rival", now=now, until=until, limit=10) == []
    assert claim_due(rt.engine, owner="rival", now=now, until=until, limit=10) == []
    during = faults.transfer(tid)
    assert during.status == "pending"
    assert during.lease_owner == first.lease_owner
    assert during.lease_until is not None and during.lease_until > first.lease_until
    assert during.runs == 1
    rx.release.set()
    t = faults.final(tid)
    assert t.status == "delivered", (t.status, t.reason)
    assert t.runs == 1  # nobody else ever claimed it
    assert rx.keys_received() == [tid] and rx.copies(tid) == 1
    assert faults.events(tid) == ["transfer.pending", "transfer.delivered"]
    assert a.stop() == 0 and b.stop() == 0
    assert verify_log(rt).ok


# -- 3. three workers under load ----------------------------------------------------------


def _sizes_in_file(path: Path) -> list[int]:
    """Tree sizes of the checkpoints in ``BROKER_HOME/checkpoints``, in file order
    (a note: origin, size, root, blank line, signatures)."""
    if not path.exists():
        return []
    sizes, lines = [], path.read_text().splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.endswith("/audit-log") and lines[i + 1].isdigit():
            sizes.append(int(lines[i + 1]))
    return sizes


def _checkpoint_sizes(faults: Faults) -> tuple[list[int], list[int]]:
    """Checkpoint sizes in the order they were stored, and in the file's order."""
    with Session(faults.rt.engine) as db:
        rows = db.exec(select(CheckpointRow).order_by(col(CheckpointRow.id))).all()
    return [c.tree_size for c in rows], _sizes_in_file(faults.rt.settings.checkpoints_file)


def _drained(rt: Runtime) -> bool:
    with Session(rt.engine) as db:
        return not db.exec(select(Transfer.id).where(Transfer.status == "pending")).first()


# A process that signs checkpoints while others append, as `broker audit checkpoint`
# or a second `broker serve` does.
SIGNER = """
import os, sys
from broker.cli.common import runtime
from broker.flows.checkpoints import sign_checkpoint
rt = runtime()
for _ in range(5000):  # until told to stop (bounded all the same)
    if os.path.exists(sys.argv[1]):
        break
    sign_checkpoint(rt)
rt.close()
"""


def test_three_workers_deliver_every_transfer_exactly_once(faults: Faults) -> None:
    rt, rx = faults.rt, faults.receiver
    count = 150
    conns = [faults.connect(PLAIN), faults.connect(IDEMPOTENT), faults.connect(PLAIN)]
    # The accepting process signs checkpoints (every 20 entries), as `broker serve` does.
    checkpoints = start_checkpointing(rt, timer=False)
    try:
        # Leases long enough that no live worker loses one to a stalled heartbeat on a
        # loaded machine: what lapses do is what the kill tests show.
        workers = [faults.worker(threads=4, lease=15) for _ in range(3)]
        started = time.monotonic()
        # accepted while the workers start and deliver (no receiver dedupe: a second
        # delivery would show as a second copy)
        tids = [faults.accept(conns[i % 3], f"W-{i}") for i in range(count)]
        accepted = time.monotonic() - started
        faults.wait_until("the queue to drain", lambda: _drained(rt), 120)
        elapsed = time.monotonic() - started
    finally:
        checkpoints.stop()
    with Session(rt.engine) as db:
        rows = db.exec(select(Transfer).where(col(Transfer.id).in_(tids))).all()
        logged = db.exec(select(AuditRow.event, AuditRow.transfer_id)).all()
    odd = [
        (t.id, t.status, t.runs, t.attempts, faults.events(t.id), rx.copies(t.id))
        for t in rows
        if t.status != "delivered" or t.runs != 1
    ]
    assert len(rows) == count and not odd, f"{len(odd)} not delivered once: {odd}"
    received, stored = rx.snapshot()
    assert sorted(r.key for r in received) == sorted(tids)  # each sent once
    assert {k: len(v) for k, v in stored.items()} == dict.fromkeys(tids, 1)
    finals = [tid for event, tid in logged if event.startswith("transfer.") and tid]
    assert sorted(finals) == sorted(tids * 2)  # pending + delivered, no late outcome
    faults.assert_broker_agrees_with_receiver(tids)
    assert [w.stop() for w in workers] == [0, 0, 0]
    result = verify_log(rt)
    assert result.ok, result.message
    in_db, in_file = _checkpoint_sizes(faults)
    assert len(in_db) >= count // 20 and in_db == sorted(in_db), in_db
    assert in_file == in_db
    print(
        f"{count} transfers accepted in {accepted:.1f} s, all delivered by 3 workers in "
        f"{elapsed:.1f} s; checkpoint sizes {in_db}"
    )


def test_checkpoints_signed_by_several_processes_never_go_down(faults: Faults) -> None:
    """While three workers append delivery events, the accepting process and two more
    processes sign checkpoints: in the order they are stored (and filed), their sizes
    never go down (a checkpoint smaller than an earlier one reads as a truncated log)."""
    rt = faults.rt
    count = 60
    conn = faults.connect(IDEMPOTENT)
    checkpoints = start_checkpointing(rt, timer=False)
    try:
        workers = [faults.worker(threads=3, lease=15) for _ in range(3)]
        stop = faults.logs / "stop-signing"
        signers = [faults.command_argv([sys.executable, "-c", SIGNER, str(stop)]) for _ in range(2)]
        tids = [faults.accept(conn, f"W-{i}") for i in range(count)]
        faults.wait_until("the queue to drain", lambda: _drained(rt), 120)
        stop.touch()
        for proc in signers:
            assert proc.wait(timeout=120) == 0, faults.all_logs()
    finally:
        checkpoints.stop()
    assert [w.stop() for w in workers] == [0, 0, 0]
    assert {faults.transfer(t).status for t in tids} == {"delivered"}
    in_db, in_file = _checkpoint_sizes(faults)
    assert len(in_db) >= 10 + count // 20
    assert in_db == sorted(in_db), f"checkpoint sizes went down (in the table): {in_db}"
    assert in_file == sorted(in_file), f"checkpoint sizes went down (in the file): {in_file}"
    result = verify_log(rt)
    assert result.ok, result.message


# -- 4. a long Retry-After holds no worker ---------------------------------------------------


def test_retry_after_an_hour_holds_no_worker(faults: Faults) -> None:
    rt, rx = faults.rt, faults.receiver
    conn = faults.connect(PLAIN)
    a = faults.accept(conn, "W-A")
    b = faults.accept(conn, "W-B")
    rx.answers[a] = (429, {"Retry-After": "3600"})
    before = rt.clock()
    w = faults.worker(threads=1)  # one thread: B is delivered only if A let it go
    tb = faults.final(b)
    after = rt.clock()
    assert tb.status == "delivered", (tb.status, tb.reason)
    assert rx.keys_received() == [a, b]  # A was tried first, then the same thread took B
    ta = faults.transfer(a)
    assert ta.status == "pending"
    assert ta.lease_owner is None and ta.lease_until is None
    assert ta.next_attempt_at is not None
    slack = timedelta(seconds=1)
    hour = timedelta(seconds=3600)
    assert before + hour - slack <= ta.next_attempt_at <= after + hour + slack
    assert [x.get("status") for x in ta.attempts] == [429]
    assert ta.attempts[0].get("retry_after") == 3600
    assert rx.copies(a) == 0
    assert faults.events(a) == ["transfer.pending"]
    faults.assert_broker_agrees_with_receiver([a, b])
    assert w.stop() == 0
    assert faults.transfer(a).status == "pending"  # a stopping worker gives nothing up wrongly
    assert verify_log(rt).ok
