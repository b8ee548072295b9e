"""Transfers through the broker versus direct POSTs to the same loopback receiver.

    python bench/transfers.py                              # sync1 and async16 on SQLite
    python bench/transfers.py --scenario async16 -n 1500 --runs 3
    python bench/transfers.py --scenario sync1 -n 300
    python bench/transfers.py --scenario audit [--database-url URL]
    python bench/transfers.py --scenario workers --database-url postgresql+psycopg://...

Every scenario measures its baseline in the same run, prints one line per run and,
with ``--runs`` > 1, the median of each figure. Each figure comes with the CPU each
process used over the measured interval (cores = CPU seconds / wall seconds, read
from ``/proc/PID/stat``) so that what bounds it can be read off: a process at about
one core is bound by its own CPU (one interpreter, the GIL); the machine is bound
when the cores add up to ``os.cpu_count()``; neither means waiting (the database's
locks and fsyncs, or the receiver). On PostgreSQL the CPU of all ``postgres``
processes is shown too (it includes other clients of the same server).

Scenarios (the processes: *clients* is this process; *broker* the broker's API
and in-process delivery workers, uvicorn on a loopback socket, forked; *receiver*
the sandbox third party, or a minimal receiver, forked):

- ``sync1``: one client, sequential. Baseline: N direct httpx POSTs of the same
  JSON to the sandbox API. Broker: N ``POST /v1/connections/{id}/transfers`` in
  the synchronous default (decide, record, deliver by a worker thread, answer
  201 with the outcome). Overhead per transfer = broker time - direct time.
- ``async16``: 16 client threads. Baseline: N direct POSTs to the sandbox API.
  Broker: N transfers with ``Prefer: respond-async`` (202 at once); measured
  end to end, from the first accept to the moment the database shows all N
  ``delivered`` (polled every 10 ms), with accept latency p50/p95/p99.
- ``audit``: audit appends/s with the Merkle tree on (no checkpoint signing), in
  this process: 16 threads through the group-commit writer
  (``AuditWriter.run`` with units that append one event each) against the old
  per-transaction ``append_event`` from 16 threads and from 1.
- ``workers`` (PostgreSQL): N pending transfers preloaded (``accept_transfer``,
  no workers), then 1, 2 and 4 ``python -m broker.cli worker`` processes started;
  once each has said it is running the queue is made due and timed until it is
  drained. Baseline: N direct POSTs from 16 threads to the same minimal receiver.
  The receiver counts Idempotency-Keys: every transfer must arrive exactly once.

A PostgreSQL URL gets a fresh schema per run, dropped after.
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import multiprocessing
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import uvicorn
from sqlalchemy import create_engine, func, select, text, update

from broker.core.catalog import default_catalog
from broker.demo import sandbox_connector, sandbox_setup
from broker.flows.connect import create_connect_session
from broker.flows.keys import create_api_key
from broker.runtime import build_runtime
from broker.settings import Settings
from broker.store.models import Transfer
from broker.web.app import create_app

PAYLOAD = {"work_item": {"id": "W-1", "title": "Benchmark"}, "author": {"name": "Ann"}}
_T = Transfer.__table__  # type: ignore[attr-defined]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- measuring ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def runqueue_wait(pid: int) -> float:
    """Seconds the process's live threads spent runnable but waiting for a CPU, summed
    over threads (from /proc/PID/task/*/schedstat). An upper bound on starvation: it
    also counts a thread woken to ask for the GIL; threads that exit are not counted."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def postgres_cpu() -> float:
    """CPU of every process named postgres on this machine (other clients included)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        if raw.split("(", 1)[1].rsplit(")", 1)[0] == "postgres":
            fields = raw.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


@dataclass
class Cpu:
    """CPU seconds per named process over an interval."""

    pids: dict[str, int]
    postgres: bool = False
    start: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    waited: dict[str, float] = field(default_factory=dict)
    _w0: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    def __enter__(self) -> Cpu:
        self.start = self._read()
        self._w0 = {name: runqueue_wait(pid) for name, pid in self.pids.items()}
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.used:
            return
        self.wall = time.perf_counter() - self._t
        now = self._read()
        # max(0, ...): a postgres backend of another client may exit meanwhile
        self.used = {k: max(0.0, now[k] - self.start[k]) for k in now}
        self.waited = {
            name: max(0.0, runqueue_wait(pid) - self._w0.get(name, 0.0))
            for name, pid in self.pids.items()
        }

    def _read(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        if self.postgres:
            out["postgres*"] = postgres_cpu()
        return out

    def cores(self) -> dict[str, float]:
        return {k: v / self.wall for k, v in self.used.items()} if self.wall else {}

    def line(self, n: int | None = None) -> str:
        parts = []
        for name, cores in self.cores().items():
            per = f", {1000 * self.used[name] / n:.2f} ms/op" if n else ""
            wait = self.waited.get(name)
            rq = f" (+{wait / self.wall:.2f} runnable-wait)" if wait and self.wall else ""
            parts.append(f"{name} {cores:.2f} core{rq}{per}")
        return "cpu: " + "; ".join(parts)

    def bound(self) -> str:
        cores = self.cores()
        ncpu = os.cpu_count() or 1
        if not cores:
            return "?"
        name, top = max(cores.items(), key=lambda kv: kv[1])
        total = sum(cores.values())
        if top >= 0.85:
            return f"{name} CPU ({top:.2f} core)"
        wanted = {k: v + self.waited.get(k, 0.0) / self.wall for k, v in cores.items()}
        wname, want = max(wanted.items(), key=lambda kv: kv[1])
        busy = os.getloadavg()[0]
        if want >= 0.85 and busy > ncpu:
            return (
                f"{wname} CPU, probably starved by other work (load {busy:.1f} > {ncpu} CPUs;"
                f" {cores[wname]:.2f} core run + {want - cores[wname]:.2f} runnable-wait)"
            )
        if total >= 0.85 * ncpu:
            return f"machine CPU ({total:.2f} of {ncpu} cores)"
        return f"waiting (no process saturated; top {name} {top:.2f} core, all {total:.2f})"


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def medians(label: str, runs: list[dict[str, float]]) -> None:
    if len(runs) < 2:
        return
    keys = runs[0].keys()
    shown = ", ".join(f"{k} {statistics.median(r[k] for r in runs):.2f}" for k in keys)
    print(f"  median of {len(runs)} runs ({label}): {shown}")


def run_clients(
    n: int, clients: int, call: Callable[[httpx.Client, int], None]
) -> tuple[float, float, list[float]]:
    """``n`` calls spread over ``clients`` threads (one httpx client each, kept alive).
    Returns the start (perf_counter), the wall seconds and each call's latency."""
    counter = itertools.count()
    lat: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    go = threading.Barrier(clients + 1)

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            call(http, -1)  # open the connection before the clock starts
            go.wait()
            mine = []
            while (i := next(counter)) < n:
                t0 = time.perf_counter()
                try:
                    call(http, i)
                except BaseException as exc:  # shown after the run
                    errors.append(exc)
                    break
                mine.append(time.perf_counter() - t0)
            with lock:
                lat.extend(mine)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    go.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return start, time.perf_counter() - start, lat


# -- databases and processes --------------------------------------------------------------


@contextmanager
def database(url: str | None) -> Iterator[str | None]:
    """The URL to use: SQLite (None) as is; PostgreSQL in a fresh schema, dropped after."""
    if not url or not url.startswith("postgresql"):
        yield url
        return
    schema = "bench_" + secrets.token_hex(4)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvicorn does for its own
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


def _url(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _serve(app: object, sock: socket.socket) -> None:
    config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def _sandbox_runtime(settings: Settings, sandbox_url: str, *, upgrade: bool) -> Any:
    """A broker runtime with the sandbox connector built in, checkpointing started."""
    from broker.flows.checkpoints import start_checkpointing

    rt = build_runtime(
        settings,
        builtins=[sandbox_connector(default_catalog(), sandbox_url)],
        plugins=[],
        upgrade=upgrade,
    )
    start_checkpointing(rt)
    return rt


def _run_broker(
    settings: Settings, sandbox_url: str, sock: socket.socket, upgrade: bool = True
) -> None:
    """What ``broker serve`` runs (checkpointing, in-process workers, uvicorn), with the
    sandbox connector built in."""
    from broker.flows.workers import ensure_workers

    rt = _sandbox_runtime(settings, sandbox_url, upgrade=upgrade)
    ensure_workers(rt)
    _serve(create_app(rt), sock)


def _run_delivery(settings: Settings, sandbox_url: str) -> None:
    """What ``broker worker`` runs (BROKER_DELIVERY_PROCESSES), with the sandbox
    connector built in: delivery workers and checkpointing, no HTTP."""
    import broker.flows.workers as w

    rt = _sandbox_runtime(settings, sandbox_url, upgrade=False)
    threads = max(settings.workers, 1)
    if hasattr(w, "start_workers"):  # with the nudges between processes (session 7)
        w.start_workers(rt, threads=threads)
    else:  # an older tree, for a same-run A/B
        rt.workers = w.DeliveryWorkers(rt, threads=threads).start()
    threading.Event().wait()


def fork(target: Callable[..., None], *args: object) -> multiprocessing.Process:
    proc = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def stop(proc: multiprocessing.Process) -> None:
    proc.terminate()
    proc.join(10)
    if proc.is_alive():
        proc.kill()
        proc.join()


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- the sandbox stack (sync1, async16) ---------------------------------------------------


def _fields(page: str) -> dict[str, str]:
    return {
        m.group(1): html.unescape(m.group(2))
        for m in re.finditer(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page)
    }


def _action(page: str, url: str) -> str:
    return urljoin(url, html.unescape(re.search(r'<form[^>]*action="([^"]*)"', page).group(1)))


def connect(rt, browser: httpx.Client) -> str:
    """A connection made through the real OAuth flow (the broker process answers)."""
    issued = create_connect_session(rt, user_id="bench-user", connector_id="sandbox")
    page = browser.get(issued.url)
    resp = browser.post(
        _action(page.text, issued.url),
        data={**_fields(page.text), "decision": "approve", "categories": ["user.name"]},
    )
    authorize = browser.get(resp.headers["location"])
    data = _fields(authorize.text) | {"confirm": "yes"}
    back = browser.post(_action(authorize.text, str(authorize.url)), data=data)
    done = browser.get(back.headers["location"])
    assert done.status_code == 200, done.text
    from broker.store.models import Connection

    with rt.engine.connect() as db:
        active = select(Connection.__table__.c.id).where(Connection.__table__.c.status == "active")
        return db.execute(active).scalar_one()


@dataclass
class Stack:
    rt: Any
    broker_url: str
    sandbox_url: str
    conn_id: str
    key: str
    token: str
    pids: dict[str, int]
    postgres: bool

    def count(self, status: str) -> int:
        with self.rt.engine.connect() as c:
            return c.execute(select(func.count()).where(_T.c.status == status)).scalar_one()

    def cpu(self) -> Cpu:
        return Cpu(self.pids, postgres=self.postgres)

    def broker_cpu(self, cpu: Cpu) -> float:
        """CPU seconds of every broker process over ``cpu``'s interval."""
        return sum(v for k, v in cpu.used.items() if k.startswith("broker"))


@contextmanager
def sandbox_stack(
    database_url: str | None,
    workers: int | None,
    processes: int = 1,
    delivery: int = 0,
    poll: float = 0.1,
) -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    broker_sock, sandbox_sock = listening_socket(), listening_socket()
    broker_url, sandbox_url = _url(broker_sock), _url(sandbox_sock)
    extra = {} if workers is None else {"workers": workers}
    settings = Settings(home=home, database_url=database_url, base_url=broker_url, **extra)
    # With delivery processes (BROKER_DELIVERY_PROCESSES), the API processes only accept.
    api_settings = settings.model_copy(update={"workers": 0}) if delivery else settings
    _provider, sandbox_app = sandbox_setup(settings.callback_url)
    sandbox = fork(_serve, sandbox_app, sandbox_sock)
    broker = fork(_run_broker, api_settings, sandbox_url, broker_sock)
    more: list[multiprocessing.Process] = []
    try:
        wait_http(f"{broker_url}/healthz")
        # Further broker processes on the same socket (BROKER_PROCESSES), started once
        # the first has upgraded the schema.
        more = [
            fork(_run_broker, api_settings, sandbox_url, broker_sock, False)
            for _ in range(processes - 1)
        ]
        polled = settings.model_copy(update={"worker_poll": poll})
        more += [fork(_run_delivery, polled, sandbox_url) for _ in range(delivery)]
        for _ in more:
            wait_http(f"{broker_url}/healthz")
        rt = build_runtime(
            settings.model_copy(update={"workers": 0}),
            builtins=[sandbox_connector(default_catalog(), sandbox_url)],
            plugins=[],
            upgrade=False,
        )
        _, key = create_api_key(rt.engine, role="admin")
        with httpx.Client(timeout=30) as browser:
            conn_id = connect(rt, browser)
        from broker.flows.tokens import access_token

        api = more[: processes - 1]
        brokers = {"broker": broker.pid} | {f"broker{i + 2}": p.pid for i, p in enumerate(api)}
        brokers |= {f"broker-delivery{i + 1}": p.pid for i, p in enumerate(more[len(api) :])}
        names = ", ".join(f"{k} {v}" for k, v in brokers.items())
        print(f"  pids: clients {os.getpid()}, {names}, receiver {sandbox.pid}")
        yield Stack(
            rt=rt,
            broker_url=broker_url,
            sandbox_url=sandbox_url,
            conn_id=conn_id,
            key=key,
            token=access_token(rt, conn_id),
            pids={"clients": os.getpid(), **brokers, "receiver": sandbox.pid},
            postgres=bool(database_url),
        )
        rt.close()
    finally:
        for proc in more:
            stop(proc)
        stop(broker)
        stop(sandbox)


def _direct(stack: Stack) -> Callable[[httpx.Client, int], None]:
    url = f"{stack.sandbox_url}/api/post_message"
    headers = {"Authorization": f"Bearer {stack.token}"}
    return lambda http, _i: http.post(url, json=PAYLOAD, headers=headers).raise_for_status()


def _through(stack: Stack, *, respond_async: bool) -> Callable[[httpx.Client, int], None]:
    url = f"{stack.broker_url}/v1/connections/{stack.conn_id}/transfers"
    headers = {"Authorization": f"Bearer {stack.key}"}
    if respond_async:
        headers["Prefer"] = "respond-async"
    want = 202 if respond_async else 201
    body = {"action": "post_message", "data": PAYLOAD}

    def call(http: httpx.Client, _i: int) -> None:
        r = http.post(url, json=body, headers=headers)
        if r.status_code != want:
            raise RuntimeError(f"broker answered {r.status_code}: {r.text[:300]}")

    return call


def scenario_sync1(stack: Stack, n: int, runs: int) -> None:
    print(f"sync1: {n} sequential requests from one client, synchronous default (201)")
    direct, through = _direct(stack), _through(stack, respond_async=False)
    summary = []
    with httpx.Client(timeout=60) as http:
        for _ in range(20):  # warm up
            direct(http, 0)
            through(http, 0)
        for r in range(runs):
            with stack.cpu() as dcpu:
                _s, d_wall, d_lat = run_clients(n, 1, direct)
            with stack.cpu() as bcpu:
                _s, b_wall, b_lat = run_clients(n, 1, through)
            d_ms, b_ms = 1000 * d_wall / n, 1000 * b_wall / n
            row = {
                "direct ms": d_ms,
                "broker ms": b_ms,
                "overhead ms": b_ms - d_ms,
                "broker cpu ms": 1000 * stack.broker_cpu(bcpu) / n,
                "ratio": d_ms / b_ms,
            }
            summary.append(row)
            print(
                f"  run {r + 1}: direct {n / d_wall:7.1f}/s ({d_ms:.2f} ms, p95"
                f" {1000 * pct(d_lat, 0.95):.2f}) | broker {n / b_wall:7.1f}/s ({b_ms:.2f} ms,"
                f" p95 {1000 * pct(b_lat, 0.95):.2f}) | overhead {b_ms - d_ms:.2f} ms/transfer,"
                f" ratio {d_ms / b_ms:.2f}x direct"
            )
            print(f"         direct {dcpu.line(n)}")
            print(f"         broker {bcpu.line(n)}; bound: {bcpu.bound()}")
    medians("sync1", summary)


def _wait_delivered(stack: Stack, target: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        if stack.count("delivered") >= target:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {stack.count('delivered')} of {target} delivered after {timeout:.0f} s"
                f" (pending {stack.count('pending')}, failed {stack.count('failed')})"
            )
        time.sleep(0.01)


def scenario_async16(stack: Stack, n: int, runs: int, clients: int) -> None:
    print(
        f"async16: {n} transfers from {clients} client threads, Prefer: respond-async,"
        " end to end (first accept -> all delivered)"
    )
    direct, through = _direct(stack), _through(stack, respond_async=True)
    run_clients(min(n, 100), clients, direct)  # warm up
    before = stack.count("delivered")
    run_clients(min(n, 100), clients, through)
    _wait_delivered(stack, before + min(n, 100), 60)
    summary = []
    for r in range(runs):
        with stack.cpu() as dcpu:
            _s, d_wall, _lat = run_clients(n, clients, direct)
        before = stack.count("delivered")
        with stack.cpu() as bcpu:
            start, a_wall, lat = run_clients(n, clients, through)
            accepted = start + a_wall
            acpu = Cpu(stack.pids, postgres=stack.postgres)
            acpu.start, acpu._t = bcpu.start, bcpu._t
            acpu.stop()  # the accept phase alone
            done = _wait_delivered(stack, before + n, 120)
        e2e = done - start
        d_rate, e_rate = n / d_wall, n / e2e
        p50, p95, p99 = (1000 * pct(lat, q) for q in (0.5, 0.95, 0.99))
        summary.append(
            {
                "direct/s": d_rate,
                "delivered/s": e_rate,
                "ratio": e_rate / d_rate,
                "accepted/s": n / a_wall,
                "accept p50 ms": p50,
                "p95": p95,
                "p99": p99,
                "broker cpu ms": 1000 * stack.broker_cpu(bcpu) / n,
            }
        )
        print(
            f"  run {r + 1}: direct {d_rate:7.1f}/s | broker end to end {e_rate:7.1f}/s"
            f" = {e_rate / d_rate:.2f}x direct | accepted {n / a_wall:7.1f}/s, drained"
            f" {1000 * (done - accepted):.0f} ms after the last accept | accept p50 {p50:.1f}"
            f" p95 {p95:.1f} p99 {p99:.1f} ms"
        )
        print(f"         direct {dcpu.line(n)}; bound: {dcpu.bound()}")
        print(f"         accept {acpu.line(n)}; bound: {acpu.bound()}")
        print(f"         e2e    {bcpu.line(n)}; bound: {bcpu.bound()}")
    medians("async16", summary)


# -- audit appends ------------------------------------------------------------------------


def scenario_audit(database_url: str | None, n: int, runs: int, threads: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from audit_log import fields  # the same event as bench/audit_log.py appends

    from broker.store.audit import append_event
    from broker.store.audit_writer import Event, audit_writer
    from broker.store.db import session_scope

    home = Path(tempfile.mkdtemp(prefix="broker-bench-audit-"))
    settings = Settings(
        home=home, database_url=database_url, checkpoint_every=0, checkpoint_interval=0
    )
    rt = build_runtime(settings, plugins=[], upgrade=True)
    writer = audit_writer(rt.engine, head_file=settings.audit_head_file)
    seq = itertools.count()

    def group(_i: int) -> None:
        f = fields(next(seq))
        ev = Event(time=datetime.now(UTC), event=f.pop("event"), actor=f.pop("actor"), fields=f)
        writer.run(lambda _conn: ([ev], None))

    def single(_i: int) -> None:
        f = fields(next(seq))
        with session_scope(rt.engine) as session:
            append_event(
                session, head_file=settings.audit_head_file, time=datetime.now(UTC),
                event=f.pop("event"), actor=f.pop("actor"), **f,
            )  # fmt: skip

    def threaded(fn: Callable[[int], None], count: int, k: int) -> tuple[float, Cpu]:
        counter = itertools.count()
        go = threading.Barrier(k + 1)

        def work() -> None:
            go.wait()
            while (i := next(counter)) < count:
                fn(i)

        ts = [threading.Thread(target=work, daemon=True) for _ in range(k)]
        for t in ts:
            t.start()
        with Cpu({"bench": os.getpid()}, postgres=bool(database_url)) as cpu:
            go.wait()
            for t in ts:
                t.join()
        return count / cpu.wall, cpu

    db = "PostgreSQL" if database_url else "SQLite (WAL, synchronous=FULL)"
    print(f"audit: appends with the Merkle tree on, {db}, in this process")
    for _ in range(50):
        group(0)
        single(0)
    small = max(100, n // 10)  # the old path is slow: fewer appends keep the run short
    summary = []
    for r in range(runs):
        b0, e0 = writer.batches, writer.entries
        g_rate, g_cpu = threaded(group, n, threads)
        batch = (writer.entries - e0) / max(1, writer.batches - b0)
        s16_rate, s16_cpu = threaded(single, small, threads)
        s1_rate, s1_cpu = threaded(single, small, 1)
        summary.append(
            {
                "group/s": g_rate,
                f"append_event x{threads}/s": s16_rate,
                "append_event x1/s": s1_rate,
                "ratio vs x1": g_rate / s1_rate,
                "batch": batch,
            }
        )
        print(
            f"  run {r + 1}: group commit ({threads} threads, {n}) {g_rate:8.0f}/s, mean batch"
            f" {batch:.1f} | append_event per transaction: {threads} threads {s16_rate:6.0f}/s,"
            f" 1 thread {s1_rate:6.0f}/s ({small} each) | group {g_rate / s1_rate:.1f}x one"
            f" thread, {g_rate / s16_rate:.1f}x {threads} threads"
        )
        print(f"         group {g_cpu.line(n)}; bound: {g_cpu.bound()}")
        print(f"         old x{threads} {s16_cpu.line(small)}; old x1 {s1_cpu.line(small)}")
    medians("audit", summary)
    rt.close()


# -- workers on PostgreSQL ----------------------------------------------------------------


def _sink_app() -> Callable[..., Any]:
    """A minimal third party: every POST is stored and answered 201 with an id; it
    counts Idempotency-Keys. ``GET /stats`` tells what it holds."""
    keys: dict[bytes, int] = {}
    state = {"received": 0, "unkeyed": 0}

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["method"] == "GET":
            dup = sum(v - 1 for v in keys.values())
            body = json.dumps({**state, "distinct": len(keys), "duplicates": dup}).encode()
            status = 200
        else:
            state["received"] += 1
            key = dict(scope["headers"]).get(b"idempotency-key")
            if key is None:
                state["unkeyed"] += 1
            else:
                keys[key] = keys.get(key, 0) + 1
            body, status = b'{"id": "%d"}' % state["received"], 201
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def _run_sink(sock: socket.socket) -> None:
    _serve(_sink_app(), sock)


SINK_MANIFEST = """\
id = "bench-sink"
name = "Bench sink"
privacy_policy_url = "{base}/privacy"
terms_url = "{base}/terms"

[oauth]
authorize_url = "{base}/authorize"
token_url = "{base}/token"
client_id = "env:BENCH_SINK_CLIENT_ID"
client_secret = "env:BENCH_SINK_CLIENT_SECRET"

[[data]]
category = "user.content.work_items"
purpose = "Store each work item the platform sends"

[[data]]
category = "user.name"
purpose = "Show who made the change"
required = false

[[actions]]
name = "post_message"
url = "{base}/api/post_message"
"""


def seed_connection(rt, connector_id: str) -> str:
    """An active connection with its consent and a never-expiring token, written the
    way the OAuth callback writes them (``broker/flows/callback.py``)."""
    from broker.store.db import session_scope
    from broker.store.models import Connection, ConnectionToken, ConsentRecord

    manifest = rt.registry.get(connector_id).manifest
    cid, consent_id = "conn_" + secrets.token_hex(8), "cons_" + secrets.token_hex(8)
    now = rt.clock()
    with session_scope(rt.engine) as session:
        session.add(
            Connection(
                id=cid,
                user_id="bench-user",
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
                user_id="bench-user",
                connector_id=connector_id,
                connector_name=manifest.name,
                granted_categories=[d.category for d in manifest.data],
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
                access_token=rt.vault.seal("bench-token", connection_id=cid, kind="access_token"),
                expires_at=None,
                updated_at=now,
            )
        )
    return cid


def _preload(rt, conn_id: str, n: int, threads: int = 8) -> None:
    from broker.core.gateway import TransferRequest
    from broker.flows.share import accept_transfer

    counter = itertools.count()
    request = TransferRequest.parse({"action": "post_message", "data": PAYLOAD})

    def work() -> None:
        while next(counter) < n:
            t, new = accept_transfer(rt, connection_id=conn_id, request=request, actor="bench")
            assert new and t.status == "pending", t.status

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def scenario_workers(
    database_url: str, n: int, runs: int, counts: list[int], threads: int | None, poll: float
) -> None:
    home = Path(tempfile.mkdtemp(prefix="broker-bench-workers-"))
    sink_sock = listening_socket()
    sink_url = _url(sink_sock)
    sink = fork(_run_sink, sink_sock)
    conn_dir = home / "connectors"
    conn_dir.mkdir(parents=True)
    (conn_dir / "bench-sink.toml").write_text(SINK_MANIFEST.format(base=sink_url))
    env = {
        **os.environ,
        "BENCH_SINK_CLIENT_ID": "bench",
        "BENCH_SINK_CLIENT_SECRET": "bench-secret",
        "BROKER_HOME": str(home / "broker"),
        "BROKER_DATABASE_URL": database_url,
        "BROKER_CONNECTORS_PATH": str(conn_dir),
        "BROKER_WORKER_POLL": str(poll),
        "PYTHONUNBUFFERED": "1",
    }
    if threads is not None:
        env["BROKER_WORKERS"] = str(threads)
    os.environ.update({k: env[k] for k in ("BENCH_SINK_CLIENT_ID", "BENCH_SINK_CLIENT_SECRET")})
    settings = Settings(
        home=home / "broker",
        database_url=database_url,
        connectors_path=str(conn_dir),
        workers=0,
        checkpoint_interval=0,
    )
    try:
        wait_http(f"{sink_url}/stats")
        rt = build_runtime(settings, plugins=[], upgrade=True)
        assert not rt.registry.problems, rt.registry.problems
        conn_id = seed_connection(rt, "bench-sink")
        per = threads if threads is not None else Settings().workers
        print(
            f"workers: {n} preloaded transfers drained by 1..{max(counts)} `broker worker`"
            f" processes ({per} threads each, BROKER_WORKER_POLL={poll}), PostgreSQL,"
            " minimal receiver"
        )
        url = f"{sink_url}/api/post_message"
        direct = lambda http, _i: http.post(url, json=PAYLOAD).raise_for_status()  # noqa: E731
        run_clients(100, 16, direct)  # warm up
        summary = []
        for r in range(runs):
            with Cpu({"clients": os.getpid(), "receiver": sink.pid}) as dcpu:
                _s, d_wall, _lat = run_clients(n, 16, direct)
            row = {"direct/s": n / d_wall}
            print(f"  run {r + 1}: direct (16 threads) {n / d_wall:7.1f}/s; {dcpu.line(n)}")
            for k in counts:
                rate, line = _drain(rt, conn_id, n, k, env, sink, sink_url)
                row[f"{k}w/s"] = rate
                row[f"{k}w ratio"] = rate / row["direct/s"]
                print(f"    {k} worker(s): {rate:7.1f}/s = {rate / row['direct/s']:.2f}x direct")
                print(f"         {line}")
            summary.append(row)
        medians("workers", summary)
        rt.close()
    finally:
        stop(sink)


def _drain(rt, conn_id: str, n: int, k: int, env: dict[str, str], sink, sink_url: str):
    before = httpx.get(f"{sink_url}/stats").json()
    _preload(rt, conn_id, n)
    with rt.engine.begin() as c:  # held back until every worker runs
        c.execute(
            update(_T)
            .where(_T.c.status == "pending")
            .values(next_attempt_at=datetime.now(UTC) + timedelta(days=3650))
        )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(k)
    ]
    try:
        for p in procs:
            line = p.stdout.readline()
            if "running" not in line:
                raise RuntimeError(f"broker worker did not start: {line}{p.stdout.read()[:2000]}")
        pids = {"receiver": sink.pid} | {f"worker{i + 1}": p.pid for i, p in enumerate(procs)}
        with Cpu(pids, postgres=True) as cpu:
            with rt.engine.begin() as c:
                c.execute(
                    update(_T)
                    .where(_T.c.status == "pending")
                    .values(next_attempt_at=datetime.now(UTC))
                )
            deadline = time.monotonic() + 120
            while True:
                with rt.engine.connect() as c:
                    left = c.execute(
                        select(func.count()).where(_T.c.status == "pending")
                    ).scalar_one()
                if left == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{left} transfers still pending after 120 s")
                time.sleep(0.01)
            cpu.stop()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    after = httpx.get(f"{sink_url}/stats").json()
    with rt.engine.connect() as c:
        statuses = dict(c.execute(select(_T.c.status, func.count()).group_by(_T.c.status)).all())
    got = after["received"] - before["received"]
    dups = after["duplicates"] - before["duplicates"]
    check = f"receiver got {got} of {n}, duplicates {dups}; statuses {statuses}"
    if got != n or dups:
        check += "  <-- NOT exactly once"
    return n / cpu.wall, f"{cpu.line(n)}; bound: {cpu.bound()}\n         {check}"


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenario",
        action="append",
        choices=["sync1", "async16", "audit", "workers"],
        help="repeatable; default: sync1 and async16",
    )
    parser.add_argument("-n", type=int, default=None, help="operations per measurement")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (medians shown)")
    parser.add_argument("--clients", type=int, default=16, help="client threads for async16")
    parser.add_argument(
        "--threads", type=int, default=None, help="delivery threads per broker process"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="broker processes on the one socket (BROKER_PROCESSES; sync1, async16)",
    )
    parser.add_argument(
        "--delivery-processes",
        type=int,
        default=0,
        help="delivery-only processes (BROKER_DELIVERY_PROCESSES; the API processes then "
        "only accept; async16)",
    )
    parser.add_argument("--workers", default="1,2,4", help="worker process counts (workers)")
    parser.add_argument(
        "--poll", type=float, default=0.1,
        help="BROKER_WORKER_POLL of worker and delivery processes (workers, --delivery-processes)",
    )  # fmt: skip
    parser.add_argument(
        "--database-url",
        default=None,
        help="default: SQLite in a temp dir; a PostgreSQL URL gets a fresh schema, dropped after",
    )
    args = parser.parse_args()
    scenarios = args.scenario or ["sync1", "async16"]
    default_n = {"sync1": 300, "async16": 1500, "audit": 5000, "workers": 2000}
    db = "PostgreSQL" if args.database_url else "SQLite"
    print(f"{os.cpu_count()} CPUs, {load()} at start; {db}; loopback")
    if "workers" in scenarios and not (args.database_url or "").startswith("postgresql"):
        parser.error("--scenario workers needs --database-url postgresql+psycopg://...")
    sandbox = [s for s in scenarios if s in ("sync1", "async16")]
    if sandbox:
        with (
            database(args.database_url) as url,
            sandbox_stack(
                url, args.threads, args.processes, args.delivery_processes, args.poll
            ) as stack,
        ):
            for s in sandbox:
                n = args.n or default_n[s]
                if s == "sync1":
                    scenario_sync1(stack, n, args.runs)
                else:
                    scenario_async16(stack, n, args.runs, args.clients)
                print(f"  ({load()})")
    if "audit" in scenarios:
        with database(args.database_url) as url:
            scenario_audit(url, args.n or default_n["audit"], args.runs, 16)
        print(f"  ({load()})")
    if "workers" in scenarios:
        counts = [int(c) for c in args.workers.split(",") if c]
        with database(args.database_url) as url:
            scenario_workers(
                url, args.n or default_n["workers"], args.runs, counts, args.threads, args.poll
            )
        print(f"  ({load()})")


if __name__ == "__main__":
    main()
