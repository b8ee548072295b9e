"""Signed checkpoints of the audit log: when they are signed, where they go, key rotation.

A checkpoint (``broker.core.checkpoint``) commits to the Merkle root of the whole log at
one size. ``sign_checkpoint`` reads the committed size and root, signs them with the
active signing key, stores the note in ``checkpoints`` and then appends it to
``BROKER_HOME/checkpoints`` (outside the database; ``0600``). Checkpoints are signed in
order: never one smaller than a checkpoint already signed.

Then the witnesses (``BROKER_WITNESSES``, ``broker.flows.witnesses``) are asked to
cosign it: in the background for the triggers below, right away for ``broker audit
checkpoint`` and key rotation. ``BROKER_CHECKPOINT_WITNESS_URL`` (deprecated: no
standard witness accepts it) still receives a ``POST`` of the note as ``text/plain``.

Triggers (``start_checkpointing``, run by ``broker serve``/``demo``): after a commit that
brings the log ``BROKER_CHECKPOINT_EVERY`` or more entries past the last checkpoint
(signed right there, after the commit, in the thread that committed), and every
``BROKER_CHECKPOINT_INTERVAL`` seconds by a timer thread, even when nothing was appended,
so that a quiet period shows as checkpoints of the same size. ``broker audit checkpoint``
signs one on demand.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from broker.core.checkpoint import Checkpoint, sign_note
from broker.core.errors import Conflict, NotFound
from broker.core.private_files import append_private
from broker.flows.webhooks import wake_sender
from broker.flows.witnesses import WitnessClient
from broker.runtime import Runtime
from broker.store.audit import append_event, lock_head, on_append
from broker.store.checkpoints import largest_signed_size
from broker.store.db import session_scope
from broker.store.merkle_models import CheckpointRow
from broker.store.tree import latest_checkpoint, root_at, tree_size
from broker.store.webhook_outbox import enqueue_event

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
        "witnessed_time": row.witnessed_time,
        "key_id": row.key_id,
        "note": row.note,
    }


def _append_file(rt: Runtime, note: str) -> None:
    append_private(rt.settings.checkpoints_file, note)


def sign_checkpoint(rt: Runtime, witness: Checkpointing | None = None) -> CheckpointRow:
    """Sign the committed log as it is now; store and file it; have it cosigned: by
    ``witness``'s background thread when given, else by the configured witnesses now."""
    ring = rt.signing_keys()
    signer = ring.signer()
    with _SIGN_LOCK, session_scope(rt.engine) as session:
        # Under the append lock: across processes, checkpoints are written in the order
        # of their sizes, so a later checkpoint never has a smaller tree.
        lock_head(session)
        size = tree_size(session)
        signed = largest_signed_size(session)
        if size < signed:
            raise Conflict(
                f"the log has {size} entries but a checkpoint of size {signed} was signed: "
                "the database was rolled back or replaced; refusing to sign a smaller tree"
            )
        root = root_at(session, size)
        cp = Checkpoint(ring.name, size, root)
        note = sign_note(cp.text(), [signer])
        row = CheckpointRow(
            tree_size=size,
            root_hash=root.hex(),
            time=rt.clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
            origin=cp.origin,
            key_id=ring.active,
            note=note,
            created_at=rt.clock(),
        )
        session.add(row)
        session.flush()
        enqueue_event(  # the host is told, in this transaction (webhooks)
            session.connection(),
            "checkpoint.signed",
            at=row.created_at,
            ids={"checkpoint_id": row.id, "tree_size": size},
            status="signed",
        )
        # Still under the lock, so the file too is in size order across processes (a
        # commit that then failed leaves a valid signature of a committed tree).
        _append_file(rt, note)
    wake_sender(rt)
    if witness is not None:
        witness.send(row)
        return row
    try:
        client = WitnessClient.from_settings(rt)
    except Exception as exc:
        log.error("witnesses not asked: %s", exc)
        return row
    return client.witness(row) if client else row


def rotate_signing_key(rt: Runtime, *, actor: str = "cli") -> dict[str, Any]:
    """A new signing key: the old one signs a last checkpoint and is retired (its public
    half kept, so every checkpoint it signed stays verifiable); the rotation is logged;
    the new key signs a first checkpoint."""
    ring = rt.signing_keys()
    old = ring.active
    last = sign_checkpoint(rt)  # cosigned now, when witnesses are configured
    new = ring.add_new_key()
    if last.witnessed_time and last.witnessed_time > ring.retired[old]:
        # A witness's clock may run ahead: the old key's last checkpoint must not count
        # as signed after the key's retirement.
        ring.retired[old] = last.witnessed_time
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
    witness_url: str | None  # deprecated plain POST of each note
    witnesses: WitnessClient | None = None
    last_size: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _busy: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _outbox: queue.Queue[CheckpointRow | None] = field(default_factory=queue.Queue)
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

    def send(self, row: CheckpointRow) -> None:
        if self.witness_url or self.witnesses:
            self._outbox.put(row)

    def _deliver(self) -> None:
        while (row := self._outbox.get()) is not None:
            rows: list[CheckpointRow | None] = [row]
            while True:  # what queued up meanwhile: witnesses need only the latest
                try:
                    rows.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            stop = rows[-1] is None
            signed = [r for r in rows if r is not None]
            try:
                for r in signed:
                    self._post(r.note)
                if self.witnesses and signed:
                    self.witnesses.witness(signed[-1])
            finally:
                for _ in rows:
                    self._outbox.task_done()
            if stop:
                return

    def _post(self, note: str) -> None:
        """The deprecated ``BROKER_CHECKPOINT_WITNESS_URL``: a plain POST of the note."""
        if not self.witness_url:
            return
        try:
            resp = self.rt.http.post(
                self.witness_url, content=note.encode(),
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )  # fmt: skip
            if resp.status_code >= 300:
                log.warning("witness answered %s to a checkpoint", resp.status_code)
            else:
                self.sent.append(note)
        except Exception as exc:  # a witness that is down never stops the log
            log.warning("could not send a checkpoint to the witness: %s", exc)

    def flush(self) -> None:
        """Wait until every checkpoint handed to the witnesses was sent (or failed)."""
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
    handle = Checkpointing(
        rt, s.checkpoint_every, s.checkpoint_interval, s.checkpoint_witness_url,
        WitnessClient.from_settings(rt),
    )  # fmt: skip
    if s.checkpoint_witness_url:
        log.warning(
            "BROKER_CHECKPOINT_WITNESS_URL is deprecated (no standard witness accepts a plain "
            "POST of the note): use BROKER_WITNESSES"
        )
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
