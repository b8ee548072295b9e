"""The broker as a C2SP ``tlog-witness`` client: cosignatures, quorum, publication.

For each signed checkpoint and each witness in ``BROKER_WITNESSES`` the broker sends
``POST <url>/add-checkpoint`` with ``old <size>`` (the size that witness last cosigned,
as far as this process knows), the RFC 9162 consistency proof from that size, and the
note (``broker.core.witness``). Answers:

- **200**: the cosignature lines are verified with that witness's key and stored
  (``checkpoint_cosignatures``), with their timestamps;
- **409**: the witness reports the size it really has: resend from that size (a
  witness that has cosigned a larger tree than this one is left alone; one that has a
  larger tree than the whole log, or another root at this size, is logged as a fork);
- **422** (its tree is not a prefix of ours: a fork, or a rolled-back database), **403**
  (it does not trust the key that signed), **404** (it does not know this log), **400**:
  logged as errors, not retried;
- anything else, or no answer: logged; the next checkpoint tries again.

Once ``BROKER_WITNESS_QUORUM`` witnesses have cosigned a checkpoint it is *published*:
its stored note gains their cosignature lines (so the published note, the export and
``GET /v1/audit/checkpoint?format=note`` carry them) and ``witnessed_time`` is set to
when the quorum-th witness cosigned, which no ``quorum - 1`` witnesses can backdate.
Nothing here raises: a witness that is down never stops or slows the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from broker.core.checkpoint import open_note
from broker.core.errors import ConfigurationError, InvalidInput, NotFound
from broker.core.witness import (
    SIZE_CONTENT_TYPE,
    Cosignature,
    CosignatureVerifier,
    WitnessEndpoint,
    add_checkpoint_body,
    format_timestamp,
    parse_cosignatures,
    parse_size,
    parse_witnesses,
    quorum_time,
    split_note,
)
from broker.runtime import Runtime
from broker.store.checkpoints import (
    cosignatures,
    cosigned_sizes,
    has_cosignature,
    latest_published,
    publish_checkpoint,
)
from broker.store.db import session_scope
from broker.store.merkle_models import CheckpointRow, CosignatureRow
from broker.store.tree import checkpoints, consistency_proof, latest_checkpoint, root_at, tree_size

__all__ = ["WitnessClient", "check_cosignatures", "cosignatures_of", "published_checkpoint"]

log = logging.getLogger("broker.witnesses")
_ATTEMPTS = 3  # a first try, and resyncs after 409 answers


def _cosigned_sizes(engine: Engine) -> dict[str, int]:
    """Per witness key id, the largest checkpoint it cosigned (what this broker knows)."""
    with Session(engine) as session:
        return cosigned_sizes(session)


@dataclass
class WitnessClient:
    rt: Runtime
    witnesses: list[WitnessEndpoint]
    quorum: int
    known: dict[str, int] = field(default_factory=dict)  # key id -> size it cosigned

    @classmethod
    def from_settings(cls, rt: Runtime) -> WitnessClient | None:
        """The configured witnesses, or None when there are none."""
        witnesses = parse_witnesses(rt.settings.witnesses)
        if not witnesses:
            return None
        if rt.settings.witness_quorum > len(witnesses):
            raise ConfigurationError(
                f"BROKER_WITNESS_QUORUM is {rt.settings.witness_quorum} but only "
                f"{len(witnesses)} witness(es) are configured: nothing could be published"
            )
        return cls(rt, witnesses, rt.settings.witness_quorum, _cosigned_sizes(rt.engine))

    def witness(self, row: CheckpointRow) -> CheckpointRow:
        """Ask every witness to cosign ``row``, store their cosignatures and publish it
        at quorum; returns the row as stored now. Never raises."""
        for endpoint in self.witnesses:
            try:
                cosignature = self._ask(endpoint, row)
                if cosignature is not None:
                    _store(self.rt.engine, row, cosignature)
            except Exception as exc:  # a witness that is down never stops the log
                log.warning(
                    "witness %s: no cosignature for checkpoint %s (retried with the next "
                    "checkpoint): %s", endpoint.verifier.name, row.tree_size, exc,
                )  # fmt: skip
        try:
            return _publish(self.rt.engine, row, self.quorum)
        except Exception as exc:
            log.warning("could not publish checkpoint %s: %s", row.tree_size, exc)
            return row

    def _ask(self, endpoint: WitnessEndpoint, row: CheckpointRow) -> Cosignature | None:
        name, kid = endpoint.verifier.name, endpoint.verifier.key_id.hex()
        body = split_note(row.note)[0]
        for _ in range(_ATTEMPTS):
            old = self.known.get(kid, 0)
            if old > row.tree_size:
                log.info(
                    "witness %s already cosigned size %s; %s skipped", name, old, row.tree_size
                )
                return None
            proof: list[bytes] = []
            if 0 < old < row.tree_size:
                found = consistency_proof(self.rt.engine, old=old, new=row.tree_size)["proof"]
                proof = [bytes.fromhex(h) for h in found]
            resp = self.rt.http.post(
                endpoint.add_checkpoint_url,
                content=add_checkpoint_body(old, proof, row.note),
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
            if resp.status_code == 200:
                lines = [line + "\n" for line in resp.text.splitlines() if line]
                found_sigs = parse_cosignatures(body, lines, [endpoint.verifier])
                if not found_sigs:
                    log.warning("witness %s answered 200 without its cosignature", name)
                    return None
                self.known[kid] = row.tree_size
                return found_sigs[0]
            if resp.status_code == 409:
                if not self._resync(endpoint, row, old, resp.text, resp.headers):
                    return None
                continue
            self._refused(endpoint, row, old, resp.status_code)
            return None
        log.warning("witness %s: still out of step after %d tries", name, _ATTEMPTS)
        return None

    def _resync(
        self, endpoint: WitnessEndpoint, row: CheckpointRow, old: int, text: str, headers: object
    ) -> bool:
        """Take the size a 409 reports; True when resending from it can succeed."""
        name, kid = endpoint.verifier.name, endpoint.verifier.key_id.hex()
        content_type = getattr(headers, "get", lambda *_: "")("content-type", "")
        try:
            size = parse_size(text)
        except Exception:
            log.error("witness %s answered 409 with no size (%s)", name, content_type[:60])
            return False
        if SIZE_CONTENT_TYPE not in content_type:
            log.warning("witness %s answered 409 as %r, not %s", name, content_type[:60],
                        SIZE_CONTENT_TYPE)  # fmt: skip
        if size == old:
            log.error(
                "FORK: witness %s has cosigned another root for size %s than this log's "
                "checkpoint: it saw another history", name, size,
            )  # fmt: skip
            return False
        self.known[kid] = size
        if size <= row.tree_size:
            return True
        with Session(self.rt.engine) as session:
            current = tree_size(session)
        if size > current:
            log.error(
                "FORK or rollback: witness %s has cosigned a tree of %s entries but this "
                "log has %s", name, size, current,
            )  # fmt: skip
        else:
            log.info("witness %s already cosigned size %s; %s skipped", name, size, row.tree_size)
        return False

    def _refused(
        self, endpoint: WitnessEndpoint, row: CheckpointRow, old: int, status: int
    ) -> None:
        name = endpoint.verifier.name
        if status == 422:
            log.error(
                "FORK: witness %s refused the consistency proof from size %s to %s: the tree "
                "it cosigned is not a prefix of this log", name, old, row.tree_size,
            )  # fmt: skip
        elif status == 403:
            log.error(
                "witness %s does not trust the key %s that signed the checkpoint: give it "
                "the current verifier key (broker audit public-key)", name, row.key_id,
            )  # fmt: skip
        elif status == 404:
            log.error("witness %s does not know the log %s: register it there", name, row.origin)
        elif status == 400:
            log.error("witness %s says the add-checkpoint request is malformed", name)
        else:
            log.warning(
                "witness %s answered %s to checkpoint %s (retried with the next checkpoint)",
                name, status, row.tree_size,
            )  # fmt: skip


def _store(engine: Engine, row: CheckpointRow, cosignature: Cosignature) -> None:
    with session_scope(engine) as session:
        if not has_cosignature(session, checkpoint_id=row.id, key_id=cosignature.key_id):
            session.add(
                CosignatureRow(
                    checkpoint_id=row.id or 0,
                    witness=cosignature.witness,
                    key_id=cosignature.key_id,
                    timestamp=cosignature.timestamp,
                    line=cosignature.line,
                )
            )


def cosignatures_of(engine: Engine, checkpoint_id: int) -> list[CosignatureRow]:
    with Session(engine) as session:
        return cosignatures(session, checkpoint_id=checkpoint_id)


def _publish(engine: Engine, row: CheckpointRow, quorum: int) -> CheckpointRow:
    """At quorum, append the cosignatures to the note and set ``witnessed_time`` (once:
    the update only applies to a row not yet published, whoever gets there first)."""
    sigs = cosignatures_of(engine, row.id or 0)
    when = quorum_time([s.timestamp for s in sigs], quorum)
    if when is not None and row.witnessed_time is None:
        with session_scope(engine) as session:
            publish_checkpoint(
                session,
                checkpoint_id=row.id,
                note=row.note + "".join(s.line for s in sigs),
                witnessed_time=format_timestamp(when),
            )
    with Session(engine) as session:
        stored = session.get(CheckpointRow, row.id)
    return stored or row


def published_checkpoint(rt: Runtime) -> CheckpointRow:
    """The latest checkpoint that counts as published: with witnesses configured, the
    latest a quorum cosigned; without, the latest signed."""
    if not rt.settings.witnesses:
        return latest_checkpoint(rt.engine)
    with Session(rt.engine) as session:
        row = latest_published(session)
    if row is None:
        raise NotFound("no checkpoint has been cosigned by a quorum of witnesses yet")
    return row


def check_cosignatures(
    rt: Runtime, witnesses: list[CosignatureVerifier], quorum: int
) -> dict[str, Any]:
    """``broker audit verify --witness-keys``: every stored checkpoint's cosignatures by
    the given witnesses verify; those cosigned by ``quorum`` of them (witnessed) commit
    to this database's tree; and at least one is witnessed."""
    verifiers = rt.signing_keys().verifiers()
    out: dict[str, Any] = {"ok": True, "witnessed": 0, "latest_witnessed_size": None}
    after = 0
    while batch := checkpoints(rt.engine, after_id=after):
        after = batch[-1].id or after
        for row in batch:
            try:
                text, _ = open_note(row.note, verifiers)
                sigs = parse_cosignatures(text, split_note(row.note)[1], witnesses)
            except InvalidInput as exc:
                return _failed(out, row, exc.message)
            if len({s.key_id for s in sigs}) < quorum:
                continue
            with Session(rt.engine) as session:
                root = (
                    root_at(session, row.tree_size) if row.tree_size <= tree_size(session) else b""
                )
            if root.hex() != row.root_hash:
                return _failed(out, row, "the witnessed root is not this database's tree")
            out["witnessed"] += 1
            out["latest_witnessed_size"] = row.tree_size
    if not out["witnessed"]:
        out.update(
            ok=False, message=f"no checkpoint is cosigned by {quorum} of the given witnesses"
        )
    return out


def _failed(out: dict[str, Any], row: CheckpointRow, message: str) -> dict[str, Any]:
    out.update(ok=False, message=f"checkpoint {row.id} (size {row.tree_size}): {message}")
    return out
