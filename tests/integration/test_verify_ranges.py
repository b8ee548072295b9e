"""``verify_log`` checks the stored log in ranges (optionally in worker processes) and
must return exactly what one sequential ``verify_chain`` pass returns, on a clean log and
after every kind of tampering, wherever it falls against the range seams."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from broker.core.audit_chain import ChainHead, compute_hash, write_head
from broker.flows.checkpoints import sign_checkpoint
from broker.flows.verification import verify_log
from broker.runtime import Runtime, build_runtime
from broker.store.audit import append_event, flush_head_files, iter_entries
from broker.store.db import session_scope

EVENTS = ("consent.granted", "transfer.delivered", "transfer.failed", "key.rotated")


@pytest.fixture
def rt(make_settings) -> Runtime:
    runtime = build_runtime(
        make_settings(checkpoint_every=0, checkpoint_interval=0), plugins=[], upgrade=True
    )
    yield runtime
    runtime.close()


def fill(rt: Runtime, n: int = 20) -> None:
    for i in range(n):
        with session_scope(rt.engine) as session:
            extra = {"purpose": "Post updates", "payload_bytes": 10 + i} if i % 2 else {}
            append_event(
                session, head_file=rt.settings.audit_head_file, time=datetime.now(UTC),
                event=EVENTS[i % 4], actor="test", user_id=f"u{i % 3}", connector_id="example",
                categories=["user.name"] if i % 3 else [], field_paths=["name", "é\n\"x"],
                details={"i": i, "z": [1, 0.5, None], "a": {"b": True}}, **extra,
            )  # fmt: skip
    flush_head_files()


def sql(rt: Runtime, statement: str, **params: object) -> None:
    with rt.engine.begin() as conn:
        conn.execute(text(statement), params)


def entry(rt: Runtime, seq: int):
    return next(e for e in iter_entries(rt.engine) if e.seq == seq)


def rehash(rt: Runtime, seq: int, *, prev: str | None = None, **changes: object) -> str:
    """Set columns of entry ``seq`` and store the hash its new content gives."""
    e = entry(rt, seq)
    content = {**e.content(), **changes}
    prev = prev or e.prev_hash
    new = compute_hash(content, prev)
    sets = "".join(f"{k} = :{k}, " for k in changes)  # column names from this file
    statement = f"UPDATE audit_log SET {sets}prev_hash = :ph, hash = :h WHERE seq = :s"  # noqa: S608
    sql(rt, statement, **changes, ph=prev, h=new, s=seq)
    return new


def swap_seqs(rt: Runtime, a: int, b: int) -> None:
    sql(rt, "UPDATE audit_log SET seq = -1 WHERE seq = :a", a=a)
    sql(rt, "UPDATE audit_log SET seq = :a WHERE seq = :b", a=a, b=b)
    sql(rt, "UPDATE audit_log SET seq = :b WHERE seq = -1", b=b)


def rewrite_from(rt: Runtime, seq: int, last: int = 20) -> str:
    prev = None
    for s in range(seq, last + 1):
        prev = rehash(rt, s, prev=prev, purpose=f"rewritten {s}")
    assert prev is not None
    return prev


def relink_after_delete(rt: Runtime) -> None:
    h9 = entry(rt, 9).hash
    sql(rt, "DELETE FROM audit_log WHERE seq = 10")
    rehash(rt, 11, prev=h9)


def forge_renumbered(rt: Runtime) -> None:
    e = entry(rt, 10)
    content = {**entry(rt, 11).content(), "seq": 21, "purpose": "forged"}
    h = compute_hash(content, e.hash)
    sql(
        rt,
        "INSERT INTO audit_log (seq, time, event, actor, categories, field_paths, details, "
        "purpose, user_id, connector_id, prev_hash, hash) SELECT 21, time, event, actor, "
        "categories, field_paths, details, 'forged', user_id, connector_id, :p, :h "
        "FROM audit_log WHERE seq = 11",
        p=e.hash, h=h,
    )  # fmt: skip


def checkpoint_then_rewrite(rt: Runtime) -> None:
    """A change hidden by a recomputed chain and head: only the checkpoint shows it."""
    new = rewrite_from(rt, 4)
    sql(rt, "UPDATE audit_head SET hash = :h WHERE id = 1", h=new)
    write_head(rt.settings.audit_head_file, ChainHead(20, new))


TAMPERS: dict[str, Callable[[Runtime], None]] = {
    "clean": lambda rt: None,
    "changed field": lambda rt: sql(rt, "UPDATE audit_log SET user_id = 'x' WHERE seq = 7"),
    "changed first": lambda rt: sql(rt, "UPDATE audit_log SET actor = 'x' WHERE seq = 1"),
    "changed on a seam": lambda rt: sql(rt, "UPDATE audit_log SET actor = 'x' WHERE seq = 9"),
    "changed last": lambda rt: sql(rt, "UPDATE audit_log SET actor = 'x' WHERE seq = 20"),
    "changed and re-hashed": lambda rt: rehash(rt, 8, purpose="resold"),
    "replaced by a forgery": lambda rt: rehash(rt, 10, prev="b" * 64, purpose="forged"),
    "prev_hash pointed back": lambda rt: sql(
        rt,
        "UPDATE audit_log SET prev_hash = (SELECT hash FROM audit_log WHERE seq = 5) "
        "WHERE seq = 10",
    ),
    "deleted middle": lambda rt: sql(rt, "DELETE FROM audit_log WHERE seq = 9"),
    "deleted first": lambda rt: sql(rt, "DELETE FROM audit_log WHERE seq = 1"),
    "deleted run": lambda rt: sql(rt, "DELETE FROM audit_log WHERE seq BETWEEN 8 AND 11"),
    "deleted, successor relinked": relink_after_delete,
    "inserted, renumbered": forge_renumbered,
    "adjacent seqs swapped": lambda rt: swap_seqs(rt, 5, 6),
    "distant seqs swapped": lambda rt: swap_seqs(rt, 4, 14),
    "seam seqs swapped": lambda rt: swap_seqs(rt, 8, 9),
    "truncated tail": lambda rt: sql(rt, "DELETE FROM audit_log WHERE seq >= 16"),
    "forged row far ahead": lambda rt: sql(
        rt,
        "INSERT INTO audit_log (seq, time, event, actor, categories, field_paths, details, "
        "prev_hash, hash) SELECT 2000000000, time, event, actor, categories, field_paths, "
        "details, hash, hash FROM audit_log WHERE seq = 20",
    ),
    "emptied": lambda rt: sql(rt, "DELETE FROM audit_log"),
    "rewritten (forked head)": lambda rt: rewrite_from(rt, 5),
    "hidden by a recomputed chain": checkpoint_then_rewrite,
    "actor null (unreadable)": lambda rt: sql(
        rt, "UPDATE audit_log SET actor = NULL WHERE seq = 6"
    ),
    "categories not a list": lambda rt: sql(
        rt, "UPDATE audit_log SET categories = '\"x\"' WHERE seq = 12"
    ),
    "details not an object": lambda rt: sql(
        rt, "UPDATE audit_log SET details = '[1]' WHERE seq = 13"
    ),
    "field_paths not strings": lambda rt: sql(
        rt, "UPDATE audit_log SET field_paths = '[1]' WHERE seq = 3"
    ),
}


# The sequential reader (ORM rows) warns about a column of the wrong JSON type.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_ranges_equal_one_sequential_pass(rt: Runtime, tamper: str) -> None:
    fill(rt)
    sign_checkpoint(rt)  # a checkpoint of size 20 (and the tree to check against it)
    TAMPERS[tamper](rt)
    reference = verify_log(rt, ranged=False)
    assert reference.ok == (tamper == "clean"), reference
    for block in (1, 2, 4, 8, 1 << 15):
        assert verify_log(rt, block=block, workers=1) == reference, block


@pytest.mark.parametrize(
    "tamper", ["clean", "changed on a seam", "deleted run", "seam seqs swapped", "truncated tail"]
)
def test_worker_processes_equal_one_sequential_pass(rt: Runtime, tamper: str) -> None:
    fill(rt)
    sign_checkpoint(rt)
    TAMPERS[tamper](rt)
    reference = verify_log(rt, ranged=False)
    assert verify_log(rt, block=4, workers=2) == reference


def test_checkpoints_inside_ranges_are_checked(rt: Runtime) -> None:
    fill(rt, 6)
    sign_checkpoint(rt)  # size 6: inside the range 5..8
    fill(rt, 7)
    sign_checkpoint(rt)  # size 13: inside 13..16
    assert verify_log(rt, block=4).ok
    checkpoint_then_rewrite_at(rt, 3)
    reference = verify_log(rt, ranged=False)
    assert (reference.problem, reference.first_bad_seq) == ("modified", 1)
    assert "checkpoint of size 6" in reference.message
    for block in (2, 4, 8):
        assert verify_log(rt, block=block) == reference


def checkpoint_then_rewrite_at(rt: Runtime, seq: int) -> None:
    new = rewrite_from(rt, seq, 13)
    sql(rt, "UPDATE audit_head SET hash = :h WHERE id = 1", h=new)
    write_head(rt.settings.audit_head_file, ChainHead(13, new))


def test_progress_reaches_the_end(rt: Runtime) -> None:
    fill(rt)
    seen: list[tuple[int, int]] = []
    assert verify_log(rt, block=4, progress=lambda done, total: seen.append((done, total))).ok
    assert seen[-1] == (20, 20)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(seen) >= 5  # once per range


def test_only_what_follows_the_first_problem_is_read_entry_by_entry(
    rt: Runtime, monkeypatch
) -> None:
    import broker.flows.verification as verification

    read: list[int] = []

    def spy(engine, *, after: int = 0, batch: int = 2000):
        for e in iter_entries(engine, after=after, batch=batch):
            read.append(e.seq)
            yield e

    monkeypatch.setattr(verification, "iter_entries", spy)
    fill(rt)
    assert verify_log(rt, block=4).ok
    assert read == []  # the ranges accepted every entry
    sql(rt, "UPDATE audit_log SET actor = 'x' WHERE seq = 9")
    result = verify_log(rt, block=4)
    assert (result.problem, result.first_bad_seq) == ("modified", 9)
    assert read[0] == 9  # entries 1-8 were accepted by the ranges
