"""A small C2SP ``tlog-witness`` (``broker witness serve``): verify, record, cosign.

It knows a set of logs by their verifier keys. For ``POST <prefix>/add-checkpoint`` it
checks the log's signature and the consistency proof from the checkpoint it last
cosigned for that origin (``broker.core.witness.check_add_checkpoint``), records the
new checkpoint and answers with an Ed25519 ``cosignature/v1`` line. It uses no log code
beyond the shared RFC 9162 proof check, so it vouches for the log rather than trusting it.

State (``--state DIR``):

- ``witness-key.json`` (``0600``, created on first run): the witness's name and
  Ed25519 private key;
- ``witness.db`` (SQLite, WAL, ``synchronous=FULL``): per origin the last cosigned size,
  root and note; and ``evidence``, every request that was signed by a known log key but
  refused (a 409 or 422 may be a fork: the log's own signature over the other history).

Check-and-store is one ``BEGIN IMMEDIATE`` transaction: of two concurrent requests (from
any number of processes on the same state) the second sees what the first recorded, so
a smaller tree can never replace a larger one (the race the spec describes).

Why a bare ASGI app on uvicorn rather than ``http.server``: uvicorn (already what
``broker serve`` runs) gives keep-alive connections, which the spec asks witnesses to
support, a hardened HTTP parser and clean shutdown; the app itself needs no framework:
one route, a body, a status.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.core.errors import ConfigurationError, InvalidInput
from broker.core.private_files import write_private
from broker.core.witness import (
    SIZE_CONTENT_TYPE,
    CosignatureSigner,
    LogKey,
    Verdict,
    check_add_checkpoint,
    parse_add_checkpoint,
    parse_checkpoint_body,
    split_note,
)

__all__ = ["WitnessApp", "WitnessState", "load_log_keys", "load_or_create_key"]

KEY_FILE = "witness-key.json"
DB_FILE = "witness.db"
MAX_BODY = 64 * 1024  # 63 proof lines and a checkpoint with its signatures fit many times

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def load_or_create_key(state: Path, name: str | None) -> tuple[CosignatureSigner, bool]:
    """The witness key in ``state`` (created, with ``name``, on first run)."""
    path = state / KEY_FILE
    if not path.exists():
        if not name:
            raise ConfigurationError("a new witness needs a name (--name witness.example/w1)")
        if any(c.isspace() or c == "+" for c in name):
            raise ConfigurationError("a witness name has no spaces and no '+'")
        private = Ed25519PrivateKey.generate()
        raw = base64.b64encode(private.private_bytes_raw()).decode()
        write_private(path, json.dumps({"version": 1, "name": name, "private": raw}))
        return CosignatureSigner(name, private), True
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data["private"]))
        stored = str(data["name"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ConfigurationError(f"{path} is not a witness key file") from None
    if name and name != stored:
        raise ConfigurationError(f"this witness is named {stored!r}, not {name!r}")
    return CosignatureSigner(stored, private), False


def load_log_keys(text: str) -> list[LogKey]:
    """Log verifier keys, one a line (``broker audit public-key`` output). Keys marked
    `` retired=…`` are left out: a retired key must not sign new history."""
    keys = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or " retired=" in line:
            continue
        keys.append(LogKey.from_vkey(line.split()[0]))
    return keys


@dataclass
class WitnessState:
    """The per-origin record of the last cosigned checkpoint, in SQLite."""

    path: Path

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS logs (origin TEXT PRIMARY KEY, size INTEGER NOT "
                "NULL, root BLOB NOT NULL, note TEXT NOT NULL, updated_at INTEGER NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS evidence (id INTEGER PRIMARY KEY, origin TEXT, "
                "old INTEGER, size INTEGER, root BLOB, status INTEGER, reason TEXT, "
                "note TEXT, at INTEGER)"
            )
        self.path.chmod(0o600)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def recorded(self, origin: str) -> tuple[int, bytes] | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT size, root FROM logs WHERE origin = ?", (origin,)).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def evidence(self) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT origin, old, size, status, reason, note FROM evidence ORDER BY id"
            ).fetchall()
        keys = ("origin", "old", "size", "status", "reason", "note")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def check_and_store(
        self, decide: Callable[[tuple[int, bytes] | None], Verdict], origin: str, now: int
    ) -> Verdict:
        """Read the record of ``origin``, decide, and store the outcome, atomically."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT size, root FROM logs WHERE origin = ?", (origin,)
                ).fetchone()
                verdict = decide((int(row[0]), bytes(row[1])) if row else None)
                if verdict.status == 200:
                    db.execute(
                        "INSERT INTO logs VALUES (?, ?, ?, ?, ?) ON CONFLICT(origin) DO UPDATE "
                        "SET size = excluded.size, root = excluded.root, note = excluded.note, "
                        "updated_at = excluded.updated_at",
                        (verdict.origin, verdict.size, verdict.root, verdict.body, now),
                    )
                elif verdict.evidence:
                    db.execute(
                        "INSERT INTO evidence (origin, old, size, root, status, reason, note, at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (verdict.origin, row[0] if row else 0, verdict.size, verdict.root,
                         verdict.status, verdict.reason, verdict.body, now),
                    )  # fmt: skip
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return verdict


@dataclass
class WitnessApp:
    """The ASGI app: ``POST <prefix>/add-checkpoint``; ``GET <prefix>/`` gives the vkey."""

    state: WitnessState
    signer: CosignatureSigner
    log_keys: list[LogKey]
    prefix: str = ""
    clock: Callable[[], float] = field(default=time.time)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == self.prefix + "/add-checkpoint":
            if method != "POST":
                return await _answer(send, 405, "use POST\n", [(b"allow", b"POST")])
            body = await _read(receive)
            if body is None:
                return await _answer(send, 413, "request too large\n")
            status, text, ctype = self.add_checkpoint(body)
            return await _answer(send, status, text, [(b"content-type", ctype.encode())])
        if path in (self.prefix + "/", self.prefix or "/") and method == "GET":
            return await _answer(send, 200, self.signer.verifier.vkey + "\n")
        await _answer(send, 404, "not found\n")

    def add_checkpoint(self, body: bytes) -> tuple[int, str, str]:
        """(status, body, content type) of the answer to one request."""
        plain = "text/plain; charset=utf-8"
        try:
            req = parse_add_checkpoint(body)
            origin = parse_checkpoint_body(split_note(req.note)[0])[0]
            now = int(self.clock())
            verdict = self.state.check_and_store(
                lambda rec: check_add_checkpoint(req, self.log_keys, rec), origin, now
            )
        except InvalidInput as exc:
            return 400, exc.message + "\n", plain
        if verdict.status == 409:
            return 409, verdict.body, SIZE_CONTENT_TYPE
        if verdict.status != 200:
            return verdict.status, verdict.reason + "\n", plain
        # The new state is on disk (committed, fsynced) before the cosignature leaves.
        return 200, self.signer.line(verdict.body, now), plain


async def _read(receive: Receive) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            return None
        if not message.get("more_body"):
            return body


async def _answer(
    send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = text.encode()
    hdrs = headers or [(b"content-type", b"text/plain; charset=utf-8")]
    hdrs = [*hdrs, (b"content-length", str(len(data)).encode()), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": data})
