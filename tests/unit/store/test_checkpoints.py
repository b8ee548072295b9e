"""Queries of checkpoints and cosignatures: sizes, order, and a publication that
happens once."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session

from broker.store.checkpoints import (
    cosignatures,
    cosigned_sizes,
    has_cosignature,
    largest_signed_size,
    latest_published,
    publish_checkpoint,
)
from broker.store.db import session_scope
from broker.store.merkle_models import CheckpointRow, CosignatureRow


def _checkpoint(size: int) -> CheckpointRow:
    return CheckpointRow(
        tree_size=size, root_hash="0" * 64, time="t", origin="o", key_id="k", note=f"note {size}\n"
    )


def _cosign(checkpoint_id: int, witness: str, key_id: str) -> CosignatureRow:
    return CosignatureRow(
        checkpoint_id=checkpoint_id,
        witness=witness,
        key_id=key_id,
        timestamp=1,
        line=f"— {witness}\n",
    )


def test_sizes_and_cosignatures(engine: Engine) -> None:
    with Session(engine) as session:
        assert largest_signed_size(session) == 0
        assert cosigned_sizes(session) == {}
    with session_scope(engine) as session:
        small, large = _checkpoint(3), _checkpoint(7)
        session.add_all([small, large])
        session.flush()
        assert small.id is not None and large.id is not None
        ids = small.id, large.id
        session.add_all(
            [_cosign(ids[0], "b", "k1"), _cosign(ids[0], "a", "k2"), _cosign(ids[1], "b", "k1")]
        )
    with Session(engine) as session:
        assert largest_signed_size(session) == 7
        assert cosigned_sizes(session) == {"k1": 7, "k2": 3}
        assert has_cosignature(session, checkpoint_id=ids[0], key_id="k2")
        assert not has_cosignature(session, checkpoint_id=ids[1], key_id="k2")
        assert [(c.witness, c.key_id) for c in cosignatures(session, checkpoint_id=ids[0])] == [
            ("a", "k2"),
            ("b", "k1"),
        ]


def test_a_checkpoint_is_published_once_and_the_latest_published_is_found(
    engine: Engine,
) -> None:
    with session_scope(engine) as session:
        rows = [_checkpoint(1), _checkpoint(2), _checkpoint(3)]
        session.add_all(rows)
        session.flush()
        first, second, _ = (r.id for r in rows)
    with session_scope(engine) as session:
        assert latest_published(session) is None
        assert publish_checkpoint(session, checkpoint_id=first, note="n1", witnessed_time="w1")
        assert publish_checkpoint(session, checkpoint_id=second, note="n2", witnessed_time="w2")
        assert not publish_checkpoint(
            session, checkpoint_id=second, note="late", witnessed_time="w3"
        )
    with Session(engine) as session:
        published = latest_published(session)
        assert published is not None
        assert (published.id, published.note, published.witnessed_time) == (second, "n2", "w2")
