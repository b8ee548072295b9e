"""Auditors at scale (issue 13): reports, pages, filters, verification and export at 10^5
and 10^6 transfers.

    python bench/audit_scale.py [--sizes 100000,1000000] [--repeats 7]

For each size, a fresh embedded SQLite database (WAL, ``synchronous=FULL``) is filled
directly (bulk inserts, not the API): N transfers over two years to 20 recipients from
10,000 users (one connection and consent record each), 86% delivered, 5% failed, 5%
blocked, 2% outcome unknown, 2% cancelled, 1-3 categories and 2-4 field paths each; one
audit entry per transfer (sealed, chained, Merkle tree built) and one signed checkpoint.
The recipient summary is then built by ``broker audit summary --rebuild``'s function.
Then, each the median of ``--repeats`` calls in this process (HTTP through FastAPI's
in-process test client, no socket):

- the recipients report (``recipients_report``, from the summary) against the query it
  replaced (every disclosed transfer's lists read into Python; one call), and through
  ``GET /v1/audit/recipients`` and the console's Recipients page (with its chart);
- the per-user report (``user_report``; ``GET /v1/users/{id}/disclosures``) over
  random users;
- the console's Integrity page and ``GET /v1/audit/verify`` once a full run is recorded,
  and the first of them after 1,000 appends (the incremental verification);
- one page (50 rows) of each transfer filter;
- ``broker audit verify`` (``verify_log``) entries/s against ``verify-export`` of the
  same log in the same run;
- the peak RSS of ``broker audit export-log`` and ``broker audit export`` (CSV), each a
  process of its own, and the time of ``audit summary --rebuild`` and ``--check``;
- the summary's cost on the hot path: outcome events from 16 threads through the
  group-commit writer with their summary upsert and without it, alternating.

Prints the CPU count and the load average: the machine is shared; every figure is
bounded by this one process's CPU and SQLite's page reads unless it says otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert
from sqlmodel import Session, col, func, select

from broker.core.audit_chain import GENESIS_HASH, format_time, seal
from broker.core.merkle import Frontier, leaf_hash, node_position
from broker.core.statuses import DISCLOSED_TRANSFER_STATUSES
from broker.flows.audit import TransferFilter, list_transfers, recipients_report
from broker.flows.checkpoints import public_keys, sign_checkpoint
from broker.flows.integrity import start_full, wait_for
from broker.flows.keys import create_api_key
from broker.flows.recorded import terms_by_connector
from broker.flows.summaries import check_summary
from broker.flows.user_report import user_report
from broker.runtime import Runtime, build_runtime
from broker.settings import Settings
from broker.store.audit_writer import Event
from broker.store.merkle_models import MerkleNode
from broker.store.models import (
    AuditHead,
    AuditRow,
    Connection,
    ConsentRecord,
    Transfer,
    TransferCategory,
)
from broker.verify_export import load_keys, read_checkpoints, verify_export
from broker.web.app import create_app

RECIPIENTS = [f"recipient-{i:02d}" for i in range(20)]
USERS = 10_000
CATEGORIES = ["user.name", "user.contact.email", "user.content.work_items", "user.location",
              "user.contact.phone_number", "user.content.comments", "user.job_title",
              "user.calendar"]  # fmt: skip
FIELDS = [f"{a}.{b}" for a in ("author", "item", "to") for b in ("id", "name", "title", "tag")]
STATUSES = (
    ["delivered"] * 86
    + ["failed"] * 5
    + ["blocked"] * 5
    + ["outcome_unknown"] * 2
    + ["cancelled"] * 2
)
FILTERS = {
    "user": TransferFilter(user_id="user-77"),
    "connector": TransferFilter(connector_id="recipient-03"),
    "status": TransferFilter(status="failed"),
    "connector+status": TransferFilter(connector_id="recipient-03", status="delivered"),
    "category": TransferFilter(category="user.location"),
    "since (last day)": None,  # filled in with the log's end
}


def _consents(now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    connections, consents = [], []
    for u in range(USERS):
        connector = RECIPIENTS[u % len(RECIPIENTS)]
        connections.append({
            "id": f"cn_{u:06d}", "user_id": f"user-{u}", "connector_id": connector,
            "status": "active", "created_at": now, "updated_at": now, "consent_id": f"cs_{u:06d}",
        })  # fmt: skip
        consents.append({
            "id": f"cs_{u:06d}", "connection_id": f"cn_{u:06d}", "user_id": f"user-{u}",
            "connector_id": connector, "connector_name": connector.title(),
            "granted_categories": CATEGORIES, "declined_categories": [], "purposes": {},
            "privacy_policy_url": f"https://{connector}.example/privacy",
            "terms_url": f"https://{connector}.example/terms", "manifest_digest": "0" * 64,
            "platform_policy_version": "1", "scopes": [], "consented_at": now,
            "recorded_at": now + timedelta(seconds=u),
        })  # fmt: skip
    return connections, consents


def _transfer(i: int, rng: random.Random, at: datetime) -> dict[str, Any]:
    u = rng.randrange(USERS)
    status = rng.choice(STATUSES)
    return {
        "id": f"tr_{i:012d}", "connection_id": f"cn_{u:06d}", "user_id": f"user-{u}",
        "connector_id": RECIPIENTS[u % len(RECIPIENTS)], "action": "post", "purpose": "bench",
        "legal_basis": "consent", "consent_id": f"cs_{u:06d}", "mode": "reject",
        "status": status, "categories": rng.sample(CATEGORIES, rng.randint(1, 3)),
        "field_paths": rng.sample(FIELDS, rng.randint(2, 4)), "dropped": [],
        "payload_sha256": hashlib.sha256(b"%d" % i).hexdigest(), "payload_bytes": 180,
        "destination": "api.example/v1", "attempts": [], "created_at": at,
        "completed_at": at, "runs": 1, "data_uses": ["essential.service"],
    }  # fmt: skip


def _entry(t: dict[str, Any], seq: int, prev: str) -> Any:
    content = {
        "seq": seq, "time": format_time(t["created_at"]), "event": f"transfer.{t['status']}",
        "actor": "broker", "user_id": t["user_id"], "connector_id": t["connector_id"],
        "connection_id": t["connection_id"], "transfer_id": t["id"],
        "consent_id": t["consent_id"], "categories": t["categories"],
        "field_paths": t["field_paths"], "purpose": t["purpose"], "legal_basis": "consent",
        "payload_sha256": t["payload_sha256"], "payload_bytes": 180,
        "destination": t["destination"], "outcome": t["status"], "details": {"attempts": 1},
    }  # fmt: skip
    return seal(content, prev)


def build(rt: Runtime, n: int) -> datetime:
    """``n`` transfers, their category rows and audit entries; returns the last time."""
    rng = random.Random(n)
    end = datetime.now(UTC).replace(microsecond=0)
    step = timedelta(days=730) / n
    started = time.perf_counter()
    connections, consents = _consents(end - timedelta(days=731))
    prev, frontier = GENESIS_HASH, Frontier()
    with Session(rt.engine) as session:
        session.execute(insert(Connection), connections)
        session.execute(insert(ConsentRecord), consents)
        rows: list[dict[str, Any]] = []
        for i in range(1, n + 1):
            rows.append(_transfer(i, rng, end - (n - i) * step))
            if len(rows) < 5000 and i < n:
                continue
            entries, nodes = [], []
            for t in rows:
                entry = _entry(t, len(entries) + i - len(rows) + 1, prev)
                prev = entry.hash
                entries.append(entry.to_row())
                for lv, ix, h in frontier.append(leaf_hash(entry.canonical())):
                    nodes.append({"pos": node_position((lv, ix)), "hash": h})
            cats = [
                {"transfer_id": t["id"], "category": c, "created_at": t["created_at"]}
                for t in rows
                for c in t["categories"]
            ]
            session.execute(insert(Transfer), rows)
            session.execute(insert(TransferCategory), cats)
            session.execute(insert(AuditRow), entries)
            session.execute(insert(MerkleNode), nodes)
            rows = []
        head = session.get(AuditHead, 1) or AuditHead(id=1, seq=0, hash=GENESIS_HASH)
        head.seq, head.hash = n, prev
        session.add(head)
        session.commit()
    print(f"  built {n:,} transfers and audit entries in {time.perf_counter() - started:.0f} s")
    return end


def _median(fn: Callable[[], Any], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:9.2f} ms"


def recipients_before(rt: Runtime) -> int:
    """The recipients query before the summary: every disclosed transfer's lists."""
    with Session(rt.engine) as session:
        session.exec(
            select(Transfer.connector_id, func.count(), func.min(Transfer.created_at))
            .where(Transfer.status == "delivered")
            .group_by(Transfer.connector_id)
        ).all()
        rows = session.exec(
            select(Transfer.connector_id, Transfer.categories, Transfer.field_paths).where(
                col(Transfer.status).in_(DISCLOSED_TRANSFER_STATUSES)
            )
        ).all()
        session.exec(
            select(Transfer.connector_id, Transfer.status, func.count())
            .where(Transfer.status != "delivered")
            .group_by(Transfer.connector_id, Transfer.status)
        ).all()
        terms_by_connector(session)
    received: dict[str, set[str]] = {}
    for connector_id, categories, paths in rows:
        received.setdefault(connector_id, set()).update(categories, paths)
    return len(received)


def _console(client: TestClient, key: str) -> None:
    page = client.get("/audit/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf, "no sign-in form"
    resp = client.post("/audit/login", data={"key": key, "csrf": csrf.group(1)})
    assert resp.status_code in (200, 303), resp.status_code


def _get(client: TestClient, path: str, **kw: Any) -> Callable[[], Any]:
    def call() -> None:
        resp = client.get(path, **kw)
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:200])

    return call


def bench_reports(rt: Runtime, client: TestClient, auth: dict[str, str], repeats: int) -> None:
    t = time.perf_counter()
    recipients_before(rt)
    before = time.perf_counter() - t
    after = _median(lambda: recipients_report(rt), repeats)
    print(f"  recipients report {_ms(after)} (before the summary: {_ms(before).strip()})")
    api = _median(_get(client, "/v1/audit/recipients", headers=auth), repeats)
    page = _median(_get(client, "/audit/recipients"), repeats)
    print(f"  GET /v1/audit/recipients {_ms(api)}; Recipients page (with chart) {_ms(page)}")
    rng = random.Random(7)
    users = [f"user-{rng.randrange(USERS)}" for _ in range(repeats * 3)]
    it = iter(users)
    flow = _median(lambda: user_report(rt, next(it)), len(users))
    it = iter(users)
    http = _median(
        lambda: _get(client, f"/v1/users/{next(it)}/disclosures", headers=auth)(), len(users)
    )
    per_user = rt_count(rt) / USERS
    print(f"  per-user report   {_ms(flow)}; GET /v1/users/ID/disclosures {_ms(http)} "
          f"(about {per_user:.0f} transfers per user)")  # fmt: skip


def rt_count(rt: Runtime) -> int:
    with Session(rt.engine) as session:
        return int(session.exec(select(func.count()).select_from(Transfer)).one())


def bench_integrity(
    rt: Runtime, client: TestClient, auth: dict[str, str], repeats: int, n: int
) -> None:
    t = time.perf_counter()
    wait_for(rt, start_full(rt, actor="bench").id or 0)
    full = time.perf_counter() - t
    print(f"  full verification (background run) {n / full:9,.0f} entries/s ({full:.1f} s)")
    client.get("/v1/audit/verify", headers=auth)  # takes in the audit.verified entry
    page = _median(_get(client, "/audit/integrity"), repeats)
    api = _median(_get(client, "/v1/audit/verify", headers=auth), repeats)
    print(f"  Integrity page    {_ms(page)}; GET /v1/audit/verify {_ms(api)}")
    from broker.flows.share import writer

    at = datetime.now(UTC)
    events = [Event(time=at, event="transfer.pending", actor="bench", fields={})] * 1000
    writer(rt).run(lambda conn: (events, None))
    t = time.perf_counter()
    _get(client, "/audit/integrity")()
    took = time.perf_counter() - t
    print(f"  Integrity page after 1,000 appends (incremental verify) {_ms(took)}")


def bench_filters(rt: Runtime, end: datetime, repeats: int) -> None:
    FILTERS["since (last day)"] = TransferFilter(since=end - timedelta(days=1))
    for name, flt in FILTERS.items():
        took = _median(lambda flt=flt: list_transfers(rt, flt, limit=50), repeats)
        print(f"  filter {name:<17} {_ms(took)} (one page of 50)")


def _peak_rss(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of a ``broker`` command run as a process of its own."""
    t = time.perf_counter()
    proc = subprocess.Popen(  # noqa: S603  (this interpreter, our own arguments)
        [sys.executable, "-m", "broker.cli", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, (argv, proc.returncode)
    return time.perf_counter() - t, usage.ru_maxrss / 1024


def bench_verify_and_export(rt: Runtime, n: int) -> None:
    env = {**os.environ, "BROKER_HOME": str(rt.settings.home)}
    env = {k: v for k, v in env.items() if not k.startswith("BROKER_") or k == "BROKER_HOME"}
    sign_checkpoint(rt)
    start, rss = _peak_rss(["audit", "summary", "--json"], env)
    print(f"  (a broker command's process start: {start:.1f} s and {rss:.0f} MB, included below)")
    export = rt.settings.home / "log.jsonl"
    took, rss = _peak_rss(["audit", "export-log", "-o", str(export), "-q"], env)
    print(f"  export-log        {n / took:9,.0f} entries/s, peak RSS {rss:6.0f} MB")
    took, rss = _peak_rss(["audit", "export", "--format", "csv", "-o", os.devnull, "-q"], env)
    print(f"  audit export csv  {n / took:9,.0f} transfers/s, peak RSS {rss:6.0f} MB")
    keys = load_keys("\n".join(k["vkey"] for k in public_keys(rt)["keys"]))
    cps, refused = read_checkpoints(Path(f"{export}.checkpoints").read_text(), keys)
    t = time.perf_counter()
    report = verify_export(str(export), cps, refused, workers=os.cpu_count() or 1)
    exported = time.perf_counter() - t
    assert report.ok, report
    took, _rss = _peak_rss(["audit", "verify", "-q"], env)
    total = report.verified
    print(f"  audit verify      {total / took:9,.0f} entries/s ({took:.1f} s, a process, "
          f"with its start); verify-export {total / exported:9,.0f} entries/s "
          f"({exported:.1f} s); {exported / took:.2f}x")  # fmt: skip
    export.unlink()


def bench_outcomes(rt: Runtime, rounds: int = 3, n: int = 2000) -> None:
    """The summary's cost on the hot path: ``n`` outcome events from 16 threads through
    the group-commit writer, each with its summary outcome and without (alternating
    rounds, the same statements otherwise); entries/s and batches of each."""
    from concurrent.futures import ThreadPoolExecutor

    from broker.flows.share import writer
    from broker.store.summaries import Outcome

    w = writer(rt)
    at = datetime.now(UTC)
    outcome = Outcome("recipient-01", "delivered", ["user.name"], ["author.name", "item.id"], at)
    rates: dict[str, list[float]] = {"with summary": [], "without": []}
    batches = {label: 0 for label in rates}
    for _ in range(rounds):
        for label in rates:
            ev = Event(time=at, event="transfer.delivered", actor="bench", fields={},
                       summary=outcome if label == "with summary" else None)  # fmt: skip
            before, t = w.batches, time.perf_counter()  # (the writer's commits)
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda _i, ev=ev: w.run(lambda conn: ([ev], None)), range(n)))
            rates[label].append(n / (time.perf_counter() - t))
            batches[label] += w.batches - before
    for label, values in rates.items():
        per_batch = rounds * n / max(batches[label], 1)
        print(f"  outcomes {label:<13} {statistics.median(values):9,.0f} entries/s "
              f"(median of {rounds}; {per_batch:.0f} per batch)")  # fmt: skip
    ratio = statistics.median(rates["with summary"]) / statistics.median(rates["without"])
    print(f"  summary upsert on the hot path: {ratio:.2f}x the entries/s without it")


def bench_size(tmp: Path, n: int, repeats: int) -> None:
    print(f"{n:,} transfers (load average {os.getloadavg()[0]:.1f}):")
    settings = Settings(home=tmp / f"n{n}", checkpoint_every=0, checkpoint_interval=0)
    rt = build_runtime(settings, plugins=[], upgrade=True)
    try:
        end = build(rt, n)
        t = time.perf_counter()
        check_summary(rt.engine, rebuild=True, check=False)
        print(f"  summary --rebuild {time.perf_counter() - t:9.1f} s")
        t = time.perf_counter()
        assert check_summary(rt.engine).ok
        print(f"  summary --check   {time.perf_counter() - t:9.1f} s")
        _row, auditor = create_api_key(rt.engine, role="auditor")
        client = TestClient(create_app(rt), base_url="http://127.0.0.1")  # no lifespan
        _console(client, auditor)
        auth = {"Authorization": f"Bearer {auditor}"}
        bench_reports(rt, client, auth, repeats)
        bench_filters(rt, end, repeats)
        bench_integrity(rt, client, auth, repeats, n)
        bench_verify_and_export(rt, n)
        bench_outcomes(rt)
    finally:
        rt.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; SQLite")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",") if s):
            bench_size(Path(tmp), size, args.repeats)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
