"""Shared fixtures: a real database (SQLite, or PostgreSQL when
BROKER_TEST_DATABASE_URL is set), a runtime, and live servers on loopback."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import create_engine, text

from broker.settings import Settings

PG_URL = os.environ.get("BROKER_TEST_DATABASE_URL")


def pytest_report_header(config: pytest.Config) -> str:
    return f"broker test database: {'PostgreSQL ' + PG_URL if PG_URL else 'SQLite (embedded)'}"


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test: a SQLite file, or a PostgreSQL
    schema of its own (dropped afterwards) so tests never see each other."""
    yield from fresh_database(tmp_path)


def fresh_database(tmp_path: Path) -> Iterator[str]:
    """The ``database_url`` fixture's body, for fixtures of other scopes."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'broker.db'}"
        return
    schema = "t_" + secrets.token_hex(6)
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def free_socket() -> socket.socket:
    """A listening loopback socket; clients may connect before the server runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this; without it uvicorn's split header/body writes
    # meet the client's delayed ACK and every response waits ~40 ms (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class LiveServer:
    """An ASGI app served by uvicorn on a loopback socket in a thread."""

    def __init__(self, app: object, sock: socket.socket) -> None:
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def start(self) -> LiveServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str):
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "home": tmp_path / "home",
            "database_url": database_url,
            "return_url_allowlist": "https://app.example.com/integrations",
        }
        values.update(overrides)
        return Settings(**values)

    return make
