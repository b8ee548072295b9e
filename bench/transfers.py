"""Transfers through the broker versus direct POSTs to the same loopback receiver.

    python bench/transfers.py [-n 500] [--database-url URL]

Starts the sandbox third party in a child process and the broker in this one
(uvicorn on loopback sockets), connects a user through the real OAuth flow,
then times, from one client thread in this process:

- baseline: N direct httpx POSTs of the same JSON to the sandbox API;
- broker:   N POST /v1/connections/{id}/transfers (scope check, pending record
            and audit event committed, delivery, outcome record and event).

Prints transfers/s for both, the ratio, and the broker's overhead per transfer.
"""

from __future__ import annotations

import argparse
import html
import multiprocessing
import re
import secrets
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
import uvicorn
from sqlalchemy import create_engine, text

from broker.core.catalog import default_catalog
from broker.demo import sandbox_connector, sandbox_setup
from broker.flows.connect import create_connect_session
from broker.flows.keys import create_api_key
from broker.runtime import build_runtime
from broker.settings import Settings
from broker.web.app import create_app

PAYLOAD = {"work_item": {"id": "W-1", "title": "Benchmark"}, "author": {"name": "Ann"}}


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvicorn does for its own
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    return sock


def _run_sandbox(app: object, sock: socket.socket) -> None:
    uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off")).run(sockets=[sock])


def _fields(page: str) -> dict[str, str]:
    return {
        m.group(1): html.unescape(m.group(2))
        for m in re.finditer(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page)
    }


def _action(page: str, url: str) -> str:
    return urljoin(url, html.unescape(re.search(r'<form[^>]*action="([^"]*)"', page).group(1)))


def connect(rt, browser: httpx.Client) -> str:
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
    return _connection_id(rt)


def _connection_id(rt) -> str:
    from sqlmodel import Session, select

    from broker.store.models import Connection

    with Session(rt.engine) as db:
        return db.exec(select(Connection.id).where(Connection.status == "active")).one()


def timed(label: str, n: int, call) -> float:
    for _ in range(min(20, n)):  # warm up connections and caches
        call()
    samples = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    p50 = statistics.median(samples) * 1000
    p95 = sorted(samples)[int(0.95 * (len(samples) - 1))] * 1000
    print(f"{label:<9} {n / total:8.1f} /s   p50 {p50:6.2f} ms   p95 {p95:6.2f} ms")
    return total / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument(
        "--database-url",
        default=None,
        help="default: SQLite in a temp dir; a PostgreSQL URL gets a fresh schema, dropped after",
    )
    args = parser.parse_args()
    schema = None
    if args.database_url and args.database_url.startswith("postgresql"):
        schema = "bench_" + secrets.token_hex(4)
        admin = create_engine(args.database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in args.database_url else "?"
        args.database_url += f"{sep}options=-csearch_path%3D{schema}"
    home = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    broker_sock = listening_socket()
    broker_url = f"http://127.0.0.1:{broker_sock.getsockname()[1]}"
    settings = Settings(home=home, database_url=args.database_url, base_url=broker_url)
    _provider, sandbox_app = sandbox_setup(settings.callback_url)
    sandbox_sock = listening_socket()
    sandbox_url = f"http://127.0.0.1:{sandbox_sock.getsockname()[1]}"
    child = multiprocessing.get_context("fork").Process(
        target=_run_sandbox, args=(sandbox_app, sandbox_sock), daemon=True
    )
    child.start()
    rt = build_runtime(
        settings,
        builtins=[sandbox_connector(default_catalog(), sandbox_url)],
        plugins=[],
        upgrade=True,
    )
    server = uvicorn.Server(uvicorn.Config(create_app(rt), log_level="error", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [broker_sock]}, daemon=True).start()
    _, key = create_api_key(rt.engine, role="admin")
    with httpx.Client(timeout=30) as browser:
        conn_id = connect(rt, browser)
    from broker.flows.tokens import access_token

    token = access_token(rt, conn_id)
    db = "PostgreSQL" if args.database_url else "SQLite"
    print(f"{args.n} sequential requests, one client, {db}, loopback")
    with (
        httpx.Client(timeout=30) as direct,
        httpx.Client(timeout=30, headers={"Authorization": f"Bearer {key}"}) as api,
    ):
        baseline = timed(
            "direct",
            args.n,
            lambda: direct.post(
                f"{sandbox_url}/api/post_message",
                json=PAYLOAD,
                headers={"Authorization": f"Bearer {token}"},
            ).raise_for_status(),
        )
        through = timed(
            "broker",
            args.n,
            lambda: api.post(
                f"{broker_url}/v1/connections/{conn_id}/transfers",
                json={"action": "post_message", "data": PAYLOAD},
            ).raise_for_status(),
        )
    print(f"ratio     broker/direct time per transfer: {through / baseline:.2f}x")
    print(f"overhead  {1000 * (through - baseline):.2f} ms per transfer")
    server.should_exit = True
    child.terminate()
    child.join()
    rt.close()
    if schema:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
