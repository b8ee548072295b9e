"""Nudges between the broker's processes that share one database.

A process that accepts a transfer for any worker to claim says so (``work``), and a
process that records an outcome says which transfer (``done``), so that a ``broker
worker`` elsewhere claims it at once instead of at its next poll
(``BROKER_WORKER_POLL``), and a request waiting for a transfer another process runs
answers when the outcome is written instead of at its next look. A nudge carries no
state of its own: the receiver reads the table as it would on a poll, so a lost or
spurious nudge costs at most one poll interval, never a transfer.

- **PostgreSQL**: ``LISTEN``/``NOTIFY`` on a channel named for the database and
  schema (every process of one deployment, wherever it runs). One listening
  connection per process.
- **SQLite** (one host): Unix datagram sockets in Linux's abstract namespace, one
  per process, each announced by an empty file in ``BROKER_HOME/wake/``; a file
  whose socket no longer answers is removed by the next sender. Elsewhere than
  Linux, processes fall back to polling.

Sends are coalesced: ``work`` and ``done`` only set a flag and add ids; a sender
thread writes one message per burst.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import select
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

__all__ = ["Wakeups"]

log = logging.getLogger("broker.wakeups")

_MAX_MESSAGE = 7000  # bytes: under PostgreSQL's 8,000-byte NOTIFY payload limit


def _messages(work: bool, done: list[str]) -> list[str]:
    """``work`` and ``done <id> <id> …`` lines, each message under the size limit."""
    out: list[str] = ["work"] if work else []
    line: list[str] = []
    size = 0
    for tid in done:
        if line and size + len(tid) + 1 > _MAX_MESSAGE:
            out.append("done " + " ".join(line))
            line, size = [], 0
        line.append(tid)
        size += len(tid) + 1
    if line:
        out.append("done " + " ".join(line))
    return out


class Wakeups:
    """This process's end of the nudges: ``on_work()`` when a transfer became due
    somewhere, ``on_done(ids)`` when outcomes were recorded somewhere."""

    def __init__(
        self,
        engine: Engine,
        home: Path,
        *,
        on_work: Callable[[], None],
        on_done: Callable[[list[str]], None],
    ) -> None:
        self.engine = engine
        self.home = home
        self.on_work = on_work
        self.on_done = on_done
        self._pg = engine.dialect.name == "postgresql"
        self._lock = threading.Lock()
        self._pending_work = False
        self._pending_done: list[str] = []
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._token = secrets.token_hex(8)
        self._sock: socket.socket | None = None
        self._listen_conn: Any = None
        self._send_conn: Any = None
        self._channel = ""
        self.sent = 0  # messages written (for tests and metrics)
        self._listed: list[str] = []
        self._listed_at = -1

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Wakeups:
        if self._pg:
            self._start_pg()
        elif sys.platform.startswith("linux"):
            self._start_sockets()
        else:
            return self  # polling only
        for target, name in ((self._listen, "wake-listen"), (self._send, "wake-send")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._kick.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                (self.home / "wake" / self._token).unlink()
        for t in self._threads:
            t.join(5)
        for conn in (self._listen_conn, self._send_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        if self._sock is not None:
            self._sock.close()

    # -- what callers say ---------------------------------------------------------------

    def work(self) -> None:
        """A transfer is due for any worker."""
        with self._lock:
            self._pending_work = True
        self._kick.set()

    def done(self, transfer_id: str) -> None:
        """This transfer's outcome (or reschedule) is written."""
        with self._lock:
            self._pending_done.append(transfer_id)
        self._kick.set()

    # -- sending ------------------------------------------------------------------------

    def _send(self) -> None:
        while True:
            self._kick.wait()
            self._kick.clear()
            if self._stopping.is_set():
                return
            with self._lock:
                work, done = self._pending_work, self._pending_done
                self._pending_work, self._pending_done = False, []
            try:
                for message in _messages(work, done):
                    self._write(message)
                    self.sent += 1
            except Exception:  # a lost nudge costs a poll interval, nothing more
                log.warning("could not nudge the other broker processes", exc_info=True)
                self._send_conn = None

    def _write(self, message: str) -> None:
        if self._pg:
            if self._send_conn is None:
                self._send_conn = self._raw_connection()
            self._send_conn.execute("SELECT pg_notify(%s, %s)", (self._channel, message))
            return
        if self._sock is None:
            return
        data = message.encode()
        for token in self._peers():
            try:
                self._sock.sendto(data, self._address(token))
            except (ConnectionRefusedError, FileNotFoundError):  # that process is gone
                with contextlib.suppress(OSError):
                    os.unlink(self.home / "wake" / token)
            except BlockingIOError:  # its queue is full: it has nudges to read already
                pass

    def _peers(self) -> list[str]:
        """The other processes' tokens, listed again only when the folder changed (its
        mtime moves when a process comes or goes): one stat per message."""
        folder = self.home / "wake"
        mtime = os.stat(folder).st_mtime_ns
        if mtime != self._listed_at:
            names = [e.name for e in os.scandir(folder) if e.name != self._token]
            self._listed, self._listed_at = names, mtime
        return self._listed

    # -- listening ----------------------------------------------------------------------

    def _dispatch(self, message: str) -> None:
        try:
            if message == "work":
                self.on_work()
            elif message.startswith("done "):
                self.on_done(message[5:].split())
        except Exception:
            log.exception("a nudge's handler failed")

    def _listen(self) -> None:
        if self._pg:
            self._listen_pg()
            return
        sock = self._sock
        if sock is None:
            return
        while not self._stopping.is_set():
            ready, _, _ = select.select([sock], [], [], 0.5)
            if not ready:
                continue
            with contextlib.suppress(BlockingIOError):
                while True:
                    self._dispatch(sock.recv(65536).decode())

    # -- SQLite: abstract Unix sockets, announced by files --------------------------------

    def _address(self, token: str) -> str:
        home = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:16]
        return f"\0broker-wake-{home}-{token}"

    def _start_sockets(self) -> None:
        folder = self.home / "wake"
        folder.mkdir(mode=0o700, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self._address(self._token))
        sock.setblocking(False)
        self._sock = sock
        (folder / self._token).touch(mode=0o600)

    # -- PostgreSQL: LISTEN / NOTIFY -----------------------------------------------------

    def _raw_connection(self) -> Any:  # a psycopg connection (a PostgreSQL-only import)
        import psycopg

        url = self.engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        return psycopg.connect(dsn, autocommit=True)

    def _start_pg(self) -> None:
        with self.engine.connect() as conn:
            where = conn.execute(text("SELECT current_database() || '/' || current_schema()"))
            scope = where.scalar_one()
        self._channel = "broker_wake_" + hashlib.sha256(scope.encode()).hexdigest()[:16]
        self._listen_conn = self._raw_connection()
        self._listen_conn.execute(f'LISTEN "{self._channel}"')

    def _listen_pg(self) -> None:
        conn = self._listen_conn
        while not self._stopping.is_set():
            try:
                for note in conn.notifies(timeout=0.5, stop_after=64):
                    self._dispatch(note.payload)
            except Exception:
                if self._stopping.is_set():
                    return
                log.warning("lost the nudge listener's connection; reconnecting", exc_info=True)
                self._stopping.wait(1.0)
                with contextlib.suppress(Exception):
                    conn = self._listen_conn = self._raw_connection()
                    conn.execute(f'LISTEN "{self._channel}"')
