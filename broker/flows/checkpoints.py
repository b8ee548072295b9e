"""Signed checkpoints of the audit log: when they are signed, where they go, key rotation.

A checkpoint (``broker.core.checkpoint``) commits to the Merkle root of the whole log at
one size. ``sign_checkpoint`` reads the committed size and root, signs them with the
active signing key, stores the note in ``checkpoints`` and then appends it to
``BROKER_HOME/checkpoints`` (outside the database; ``0600``), and hands it to the witness
(``BROKER_CHECKPOINT_WITNESS_URL``), which receives a ``POST`` of the note as
``text/plain``.

Triggers (``start_checkpointing``, run by ``broker serve``/``demo``): after a commit that
brings the log ``BROKER_CHECKPOINT_EVERY`` or more entries past the last checkpoint
(signed right there, after the commit, in the thread that committed), and every
``BROKER_CHECKPOINT_INTERVAL`` seconds by a timer thread, even when nothing was appended,
so that a quiet period shows as checkpoints of the same size. ``broker audit checkpoint``
signs one on demand.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from broker.core.checkpoint import Checkpoint, sign_note
from broker.core.errors import NotFound
from broker.runtime import Runtime
from broker.store.audit import append_event, lock_head, on_append
from broker.store.db import session_scope
from broker.store.merkle_models import CheckpointRow
from broker.store.tree import latest_checkpoint, root_at, tree_size

__all__ = [
    "Checkpointing",
    "checkpoint_dict",
    "public_keys",
    "rotate_signing_key",
    "sign_checkpoint",
    "start_checkpointing",
]

log = logging.getLogger("broker.checkpoints")
_SIGN_LOCK = threading.Lock()


def checkpoint_dict(row: CheckpointRow) -> dict[str, Any]:
    return {
        "origin": row.origin,
        "tree_size": row.tree_size,
        "root_hash": row.root_hash,
        "time": row.time,
        "key_id": row.key_id,
        "note": row.note,
    }


def _append_file(rt: Runtime, note: str) -> None:
    path = rt.settings.checkpoints_file
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (note + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def sign_checkpoint(rt: Runtime, witness: Checkpointing | None = None) -> CheckpointRow:
    """Sign the committed log as it is now; store, file and (optionally) witness it."""
    ring = rt.signing_keys()
    signer = ring.signer()
    with _SIGN_LOCK, session_scope(rt.engine) as session:
        # Under the append lock: across processes, checkpoints are written in the order
        # of their sizes, so a later checkpoint never has a smaller tree.
        lock_head(session)
        size = tree_size(session)
        root = root_at(session, size)
        cp = Checkpoint(ring.name, size, root, rt.clock().strftime("%Y-%m-%dT%H:%M:%SZ"))
        note = sign_note(cp.text(), [signer])
        row = CheckpointRow(
            tree_size=size,
            root_hash=root.hex(),
            time=cp.time,
            origin=cp.origin,
            key_id=ring.active,
            note=note,
            created_at=rt.clock(),
        )
        session.add(row)
        session.flush()
        # Still under the lock, so the file too is in size order across processes (a
        # commit that then failed leaves a valid signature of a committed tree).
        _append_file(rt, note)
    if witness is not None:
        witness.send(note)
    return row


def rotate_signing_key(rt: Runtime, *, actor: str = "cli") -> dict[str, Any]:
    """A new signing key: the old one signs a last checkpoint and is retired (its public
    half kept, so every checkpoint it signed stays verifiable); the rotation is logged;
    the new key signs a first checkpoint."""
    ring = rt.signing_keys()
    old = ring.active
    last = sign_checkpoint(rt)
    new = ring.add_new_key()
    ring.save(rt.settings.resolved_signing_keys_file)
    vkey = next(v.vkey for v in ring.verifiers() if v.key_id.hex() == new)
    with session_scope(rt.engine) as session:
        append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=rt.clock(),
            event="key.rotated",
            actor=actor,
            details={
                "key": "checkpoint-signing",
                "new_key_id": new,
                "previous_key_ids": [old],
                "verifier_key": vkey,
            },
        )
    first = sign_checkpoint(rt)
    return {
        "new_key_id": new,
        "previous_key_id": old,
        "verifier_key": vkey,
        "last_checkpoint_size": last.tree_size,
        "first_checkpoint_size": first.tree_size,
    }


def public_keys(rt: Runtime) -> dict[str, Any]:
    ring = rt.signing_keys()
    keys = [
        {
            "key_id": v.key_id.hex(),
            "vkey": v.vkey,
            "algorithm": "ed25519",
            "active": v.key_id.hex() == ring.active,
            "created_at": ring.created.get(v.key_id.hex()),
            "retired_at": v.not_after,
        }
        for v in ring.verifiers()
    ]
    return {"origin": ring.name, "active_key_id": ring.active, "keys": keys}


@dataclass
class Checkpointing:
    """The running triggers of one broker process; ``stop`` ends them."""

    rt: Runtime
    every: int
    interval: float
    witness_url: str | None
    last_size: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _busy: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _outbox: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _remove: Any = None
    sent: list[str] = field(default_factory=list)

    def _after_append(self, seq: int) -> None:
        if self.every and seq - self.last_size >= self.every and self._busy.acquire(False):
            try:  # one signer at a time; appends that race it are in its checkpoint or the next
                if seq - self.last_size >= self.every:
                    self._sign()
            finally:
                self._busy.release()

    def _sign(self) -> None:
        try:
            row = sign_checkpoint(self.rt, self)
        except Exception:
            log.exception("could not sign a checkpoint")
            return
        self.last_size = max(self.last_size, row.tree_size)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._sign()

    def send(self, note: str) -> None:
        if self.witness_url:
            self._outbox.put(note)

    def _deliver(self) -> None:
        while (note := self._outbox.get()) is not None:
            try:
                resp = self.rt.http.post(
                    self.witness_url or "", content=note.encode(),
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                )  # fmt: skip
                if resp.status_code >= 300:
                    log.warning("witness answered %s to a checkpoint", resp.status_code)
                else:
                    self.sent.append(note)
            except Exception as exc:  # a witness that is down never stops the log
                log.warning("could not send a checkpoint to the witness: %s", exc)
            finally:
                self._outbox.task_done()

    def flush(self) -> None:
        """Wait until every checkpoint handed to the witness was sent (or failed)."""
        self._outbox.join()

    def stop(self) -> None:
        if self._remove is not None:
            self._remove()
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5)


def start_checkpointing(rt: Runtime, *, timer: bool = True) -> Checkpointing:
    s = rt.settings
    handle = Checkpointing(rt, s.checkpoint_every, s.checkpoint_interval, s.checkpoint_witness_url)
    try:
        handle.last_size = latest_checkpoint(rt.engine).tree_size
    except NotFound:
        handle.last_size = 0
    handle._remove = on_append(rt.engine, handle._after_append)
    workers = [handle._deliver] + ([handle._tick] if timer and handle.interval else [])
    for target in workers:
        thread = threading.Thread(target=target, name="checkpoints", daemon=True)
        thread.start()
        handle._threads.append(thread)
    return handle
