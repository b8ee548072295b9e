"""The verifiable audit log: append throughput, proof latency, verify-export speed.

    python bench/audit_log.py [--sizes 10000,100000,1000000] [--appends 2000]

Each run uses a fresh embedded SQLite database (WAL, ``synchronous=FULL``) in a
temporary directory.

1. Appends, each in its own transaction as the broker makes them, three ways:
   - *chain only*: the append as it was before the Merkle tree (lock the head, seal,
     insert the entry, move the head), reimplemented here as the baseline;
   - *chain + tree*: ``append_event`` (also writes the tree's nodes);
   - *chain + tree + checkpoints*: the same with the checkpoint trigger running and
     signing every 100 entries (``BROKER_CHECKPOINT_EVERY=100``).
2. For each size: a log of that many entries is generated directly through the core
   (sealed, chained, tree built, rows bulk-inserted: not through HTTP), one checkpoint
   is signed, then: inclusion and consistency proof latency through the store (median
   and 99th percentile of 200 random proofs), ``broker audit export-log`` time,
   ``verify-export`` speed (entries/s) with 1 process and with one per core, and
   ``broker audit verify`` (``verify_log``: the database, head file and checkpoints) in
   1 process and one per core, against the verify-export figure of the same run (and the
   sequential pass it replaced, for logs of at most 200,000 entries).

Prints entries/s and proof ms, the CPU count and the load average (other work on the
machine depresses every figure; verify-export also prints entries per CPU-second).

Figures on the 2-CPU development machine (SQLite), November 2026:

    quiet (load 1.3):     chain only 344/s, + tree 280/s (+18.5%), + checkpoints/100 267/s
                          10^5: inclusion 0.86 ms (p99 1.20), consistency 0.83 ms,
                          export-log 21,494/s, verify-export 183,334/s (1 proc.), 236,522/s (2)
                          10^6 export file: verify-export 222,000/s (2 proc., 4.5 s)
    busy (load 4-7, other test suites running):
                          chain only 100/s, + tree 97/s (+2.2%), + checkpoints/100 80/s
                          10^6: inclusion 1.18 ms (p99 2.21), consistency 1.22 ms (p99 2.14),
                          export-log 9,695/s, verify-export 96,943/s (1), 80,902/s (2)
    `audit verify` (issue 13), 2 x 10^5, December 2026 (load 0.4-1.7, shared): sequential
                          (before) 19,000/s; ranged 1 proc. 75,000-85,000/s, 2 proc.
                          141,000-155,000/s; after encode_row and raw SQLite rows (ad-hoc
                          script, load 1.1): 116,000/s (1), 199,000/s (2); bench/README.md
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert
from sqlmodel import Session

from broker.core.audit_chain import GENESIS_HASH, seal
from broker.core.merkle import Frontier, leaf_hash, node_position
from broker.flows.audit import export_checkpoints, export_log, verify_log
from broker.flows.checkpoints import public_keys, sign_checkpoint, start_checkpointing
from broker.runtime import build_runtime
from broker.settings import Settings
from broker.store.audit import _lock_head, append_event
from broker.store.db import session_scope
from broker.store.merkle_models import MerkleNode
from broker.store.models import AuditHead, AuditRow
from broker.store.tree import consistency_proof, inclusion_proof
from broker.verify_export import load_keys, read_checkpoints, verify_export

FIELDS = {
    "event": "transfer.delivered",
    "actor": "broker",
    "connector_id": "acme-chat",
    "categories": ["user.content.work_items", "user.name"],
    "field_paths": ["author.name", "work_item.id", "work_item.title"],
    "purpose": "Post work item updates to your team channel",
    "legal_basis": "consent",
    "payload_bytes": 187,
    "destination": "api.acme-chat.example/v2/messages",
    "outcome": "delivered",
}


def fields(i: int) -> dict:
    return {
        **FIELDS,
        "user_id": f"user-{i % 9973}",
        "connection_id": f"conn_{i % 9973:012d}",
        "transfer_id": f"tr_{i:016d}",
        "consent_id": f"cons_{i % 9973:012d}",
        "payload_sha256": hashlib.sha256(str(i).encode()).hexdigest(),
        "details": {"attempts": 1, "status_code": 201, "response_id": f"msg-{i}"},
    }


def runtime(tmp: Path, name: str, **settings):
    return build_runtime(Settings(home=tmp / name, **settings), plugins=[], upgrade=True)


def baseline_append(rt, i: int) -> None:
    """The append before the Merkle tree: lock, seal, insert, move the head."""
    with session_scope(rt.engine) as session:
        head = _lock_head(session)
        content = {"seq": head.seq + 1, "time": _now(), **fields(i)}
        entry = seal(content, head.hash)
        session.add(AuditRow(**entry.to_dict()))
        head.seq, head.hash = entry.seq, entry.hash
        session.add(head)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def tree_append(rt, i: int) -> None:
    with session_scope(rt.engine) as session:
        f = fields(i)
        append_event(
            session, head_file=None, time=datetime.now(UTC), event=f.pop("event"),
            actor=f.pop("actor"), **f,
        )  # fmt: skip


def bench_appends(tmp: Path, n: int, rounds: int = 10) -> None:
    """The three ways, interleaved in ``rounds`` so that background load hits each alike."""
    print(f"appends, one transaction each, {n} per way ({rounds} interleaved rounds):")
    ways = (
        ("chain only (before)", baseline_append, {}),
        ("chain + tree", tree_append, {}),
        ("chain + tree + checkpoints/100", tree_append, {"checkpoint_every": 100}),
    )
    runs = []
    for k, (label, fn, extra) in enumerate(ways):
        rt = runtime(tmp, f"appends-{k}", checkpoint_interval=0, **extra)
        handle = start_checkpointing(rt, timer=False) if extra else None
        for i in range(20):  # warm up
            fn(rt, i)
        runs.append((label, fn, rt, handle, [0.0]))
    per_round = max(1, n // rounds)
    for r in range(rounds):
        for _label, fn, rt, _handle, took in runs:
            start = time.perf_counter()
            for i in range(r * per_round, (r + 1) * per_round):
                fn(rt, i)
            took[0] += time.perf_counter() - start
    rates = {}
    for label, _fn, rt, handle, took in runs:
        rates[label] = per_round * rounds / took[0]
        if handle:
            handle.stop()
        rt.close()
        print(f"  {label:34s} {rates[label]:9.0f} entries/s")
    base = rates["chain only (before)"]
    for label, rate in list(rates.items())[1:]:
        print(f"  {label:34s} {100 * (base - rate) / base:+8.1f}% slower than chain only")


def generate(rt, size: int) -> None:
    """``size`` entries straight into the tables (sealed, chained, tree built)."""
    prev, frontier, rows, nodes = GENESIS_HASH, Frontier(), [], []
    t0 = time.perf_counter()
    with Session(rt.engine) as session:
        for i in range(1, size + 1):
            entry = seal({"seq": i, "time": "2026-01-31T12:00:00.000000Z", **fields(i)}, prev)
            prev = entry.hash
            rows.append(entry.to_dict())
            for lv, ix, h in frontier.append(leaf_hash(entry.canonical())):
                nodes.append({"pos": node_position((lv, ix)), "hash": h})
            if len(rows) >= 5000 or i == size:
                session.execute(insert(AuditRow), rows)
                session.execute(insert(MerkleNode), nodes)
                rows, nodes = [], []
        head = session.get(AuditHead, 1) or AuditHead(id=1, seq=0, hash=GENESIS_HASH)
        head.seq, head.hash = size, prev
        session.add(head)
        session.commit()
    print(f"  generated {size} entries in {time.perf_counter() - t0:.1f} s")


def _cpu() -> float:
    """CPU seconds used by this process and its finished children."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _ms(samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[int(len(samples) * 0.99) - 1]
    return f"median {1000 * statistics.median(samples):6.2f} ms, p99 {1000 * p99:6.2f} ms"


def bench_size(tmp: Path, size: int) -> None:
    print(f"log of {size} entries:")
    rt = runtime(tmp, f"size-{size}", checkpoint_every=0, checkpoint_interval=0)
    generate(rt, size)
    sign_checkpoint(rt)
    rng = random.Random(size)
    incl, cons = [], []
    for _ in range(200):
        seq = rng.randint(1, size)
        t = time.perf_counter()
        inclusion_proof(rt.engine, seq=seq, size=size)
        incl.append(time.perf_counter() - t)
        old = rng.randint(1, size)
        t = time.perf_counter()
        consistency_proof(rt.engine, old=old, new=size)
        cons.append(time.perf_counter() - t)
    print(f"  inclusion proof     {_ms(incl)}")
    print(f"  consistency proof   {_ms(cons)}")
    export = rt.settings.home / "log.jsonl"
    t = time.perf_counter()
    with open(export, "wb") as out:
        export_log(rt, out)
    with open(str(export) + ".checkpoints", "wb") as out:
        export_checkpoints(rt, out)
    took = time.perf_counter() - t
    print(f"  export-log          {size / took:9.0f} entries/s ({took:.1f} s)")
    keys = load_keys("\n".join(k["vkey"] for k in public_keys(rt)["keys"]))
    cps, refused = read_checkpoints(Path(str(export) + ".checkpoints").read_text(), keys)
    for workers in (1, os.cpu_count() or 1):
        t, cpu = time.perf_counter(), _cpu()
        report = verify_export(str(export), cps, refused, workers=workers)
        took, cpu = time.perf_counter() - t, _cpu() - cpu
        assert report.ok and report.verified == size, report
        print(
            f"  verify-export       {size / took:9.0f} entries/s ({took:.2f} s, {workers} proc.;"
            f" {size / cpu:.0f} entries per CPU-second)"
        )
    bench_verify_log(rt, size, export_rate=size / took)
    rt.close()


def bench_verify_log(rt, size: int, *, export_rate: float) -> None:
    """``broker audit verify`` (``verify_log``) on the same log, after verify-export: the
    ranged check in 1 process and one per core; the sequential pass (before issue 13) on
    logs of at most 200,000 entries."""
    ways = [(f"{w} proc.", {"workers": w}) for w in sorted({1, os.cpu_count() or 1})]
    if size <= 200_000:
        ways.insert(0, ("sequential (before)", {"ranged": False}))
    for label, options in ways:
        t, cpu = time.perf_counter(), _cpu()
        result = verify_log(rt, **options)
        took, cpu = time.perf_counter() - t, _cpu() - cpu
        assert result.ok and result.checked == size, result
        print(
            f"  audit verify        {size / took:9.0f} entries/s ({took:.2f} s, {label}; "
            f"{size / cpu:.0f} per CPU-second; {size / took / export_rate:.2f}x verify-export)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--appends", type=int, default=2000)
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        if args.appends:
            bench_appends(Path(tmp), args.appends)
        for size in (int(s) for s in args.sizes.split(",") if s):
            bench_size(Path(tmp), size)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
