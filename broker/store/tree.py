"""Reading the Merkle tree and the checkpoints: roots, proofs, checkpoint rows.

Proofs and roots read only stored complete subtrees (``merkle_nodes``), in one query:
``O(log n)`` rows by primary key, whatever the size of the log.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from broker.core.errors import InvalidInput, NotFound
from broker.core.merkle import (
    Node,
    consistency_nodes,
    fold,
    inclusion_nodes,
    prove,
    root_nodes,
)
from broker.store.audit import fetch_nodes
from broker.store.merkle_models import CheckpointRow
from broker.store.models import AuditHead

__all__ = [
    "checkpoints",
    "consistency_proof",
    "inclusion_proof",
    "latest_checkpoint",
    "root_at",
    "tree_size",
]


def tree_size(session: Session) -> int:
    """The number of committed entries (leaves)."""
    head = session.get(AuditHead, 1)
    return head.seq if head else 0


def _size(session: Session, size: int | None, name: str) -> int:
    current = tree_size(session)
    if size is None:
        return current
    if not 0 <= size <= current:
        raise InvalidInput(
            f"{name} must be between 0 and the tree size {current}",
            details={"field": name, "tree_size": current},
        )
    return size


def _read(
    session: Session, plan: list[list[Node]], sizes: tuple[int, ...], extra: tuple[Node, ...] = ()
) -> tuple[list[bytes], list[bytes], dict[Node, bytes]]:
    """The proof's hashes and the roots at ``sizes``, from one read of the stored nodes."""
    roots = {size: root_nodes(size) for size in sizes}
    wanted = {n for element in plan for n in element} | set(extra)
    wanted |= {n for nodes in roots.values() for n in nodes}
    found = fetch_nodes(session, wanted)
    if len(found) != len(wanted):
        raise LookupError("the Merkle tree lacks nodes; run `broker db upgrade`")
    proof = prove(plan, lambda _wanted: found)
    return proof, [fold([found[n] for n in roots[size]]) for size in sizes], found


def root_at(session: Session, size: int) -> bytes:
    """The Merkle root of the first ``size`` entries."""
    return _read(session, [], (size,))[1][0]


def inclusion_proof(engine: Engine, *, seq: int, size: int | None = None) -> dict[str, object]:
    """Proof that entry ``seq`` is leaf ``seq - 1`` of the tree of ``size`` entries."""
    with Session(engine) as session:
        size = _size(session, size, "size")
        if not 1 <= seq <= size:
            raise InvalidInput(f"seq must be between 1 and size ({size})", details={"field": "seq"})
        leaf = (0, seq - 1)
        proof, (root,), found = _read(session, inclusion_nodes(seq - 1, size), (size,), (leaf,))
    return {
        "seq": seq,
        "leaf_index": seq - 1,
        "tree_size": size,
        "leaf_hash": found[leaf].hex(),
        "root_hash": root.hex(),
        "proof": [h.hex() for h in proof],
    }


def consistency_proof(engine: Engine, *, old: int, new: int | None = None) -> dict[str, Any]:
    """Proof that the tree of ``new`` entries extends the tree of ``old`` entries."""
    with Session(engine) as session:
        new = _size(session, new, "to")
        if not 0 <= old <= new:
            raise InvalidInput(f"from must be between 0 and to ({new})", details={"field": "from"})
        proof, (old_root, new_root), _ = _read(session, consistency_nodes(old, new), (old, new))
    return {
        "from": old,
        "to": new,
        "from_root": old_root.hex(),
        "to_root": new_root.hex(),
        "proof": [h.hex() for h in proof],
    }


def latest_checkpoint(engine: Engine) -> CheckpointRow:
    with Session(engine) as session:
        row = session.exec(
            select(CheckpointRow).order_by(col(CheckpointRow.id).desc()).limit(1)
        ).first()
    if row is None:
        raise NotFound("no checkpoint has been signed yet")
    return row


def checkpoints(engine: Engine, *, after_id: int = 0, limit: int = 1000) -> list[CheckpointRow]:
    """Checkpoints in the order they were signed."""
    with Session(engine) as session:
        return list(
            session.exec(
                select(CheckpointRow)
                .where(col(CheckpointRow.id) > after_id)
                .order_by(col(CheckpointRow.id))
                .limit(limit)
            ).all()
        )
