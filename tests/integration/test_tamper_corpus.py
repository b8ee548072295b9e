"""One corruption corpus through both verifiers: ``broker audit verify`` (``verify_log`` on
the database) and ``verify-export`` (on ``broker audit export-log`` of the same database)
name the same tampering with the same word (``TamperKind``) at the same entry."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker import verify_export as ve
from broker.core.tamper import TamperKind
from broker.flows.audit import export_checkpoints, export_log
from broker.flows.checkpoints import public_keys, sign_checkpoint
from broker.flows.verification import verify_log
from broker.runtime import Runtime, build_runtime
from tests.integration.test_verify_ranges import (
    checkpoint_then_rewrite,
    fill,
    forge_renumbered,
    rehash,
    relink_after_delete,
    sql,
    swap_seqs,
)

K = TamperKind


@pytest.fixture
def rt(make_settings) -> Iterator[Runtime]:
    runtime = build_runtime(
        make_settings(checkpoint_every=0, checkpoint_interval=0), plugins=[], upgrade=True
    )
    yield runtime
    runtime.close()


CORPUS: dict[str, tuple[Callable[[Runtime], object], TamperKind, int]] = {
    "content modified": (
        lambda rt: sql(rt, "UPDATE audit_log SET purpose = 'Sell it' WHERE seq = 7"),
        K.MODIFIED,
        7,
    ),
    "modified and re-hashed": (lambda rt: rehash(rt, 8, purpose="resold"), K.MODIFIED, 8),
    "deleted": (lambda rt: sql(rt, "DELETE FROM audit_log WHERE seq = 9"), K.DELETED, 9),
    "deleted, successor re-linked": (relink_after_delete, K.DELETED, 10),
    "deleted run": (
        lambda rt: sql(rt, "DELETE FROM audit_log WHERE seq BETWEEN 12 AND 14"),
        K.DELETED,
        12,
    ),
    "last entries deleted": (
        lambda rt: sql(rt, "DELETE FROM audit_log WHERE seq >= 16"),
        K.TRUNCATED,
        16,
    ),
    "inserted (a forged entry after 10)": (forge_renumbered, K.INSERTED, 21),
    "reordered (two seqs exchanged)": (lambda rt: swap_seqs(rt, 5, 6), K.REORDERED, 5),
    "change hidden by a recomputed chain": (checkpoint_then_rewrite, K.MODIFIED, 1),
}


def _verify_export(rt: Runtime, tmp: Path) -> ve.Report:
    log, notes = tmp / "log.jsonl", tmp / "log.jsonl.checkpoints"
    with log.open("wb") as out:
        export_log(rt, out)
    with notes.open("wb") as out:
        export_checkpoints(rt, out)
    keys = "".join(f"{k['vkey']}\n" for k in public_keys(rt)["keys"])
    found, refused = ve.read_checkpoints(notes.read_text(), ve.load_keys(keys))
    return ve.verify_export(str(log), found, refused)


@pytest.mark.parametrize("name", list(CORPUS))
def test_both_verifiers_name_the_same_kind_at_the_same_entry(
    rt: Runtime, tmp_path: Path, name: str
) -> None:
    corrupt, kind, seq = CORPUS[name]
    fill(rt)
    sign_checkpoint(rt)  # size 20: what verify-export trusts, and the database verify too
    assert verify_log(rt).ok and _verify_export(rt, tmp_path).ok
    corrupt(rt)
    in_db = verify_log(rt)
    export = _verify_export(rt, tmp_path)
    assert (in_db.ok, in_db.problem, in_db.first_bad_seq) == (False, kind, seq), in_db.message
    assert (export.ok, export.problem, export.first_bad_seq) == (False, kind, seq), export.message


def test_the_corpus_covers_every_kind_of_tampering_on_entries() -> None:
    # forked needs a history the log itself signed twice: tests/unit/core/test_verify_export.py
    # and tests/unit/core/test_audit_chain.py; every other kind is in the corpus
    assert {kind for _c, kind, _s in CORPUS.values()} == set(TamperKind) - {K.FORKED}


def _export_problems() -> set[str]:
    """The problem words ``verify_export.py`` can report, read from its source (it imports
    nothing of the broker, so it spells them as strings): the second argument of
    ``report.fail(...)`` and the second member of the tuples ``_classify`` returns."""
    words: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(ve))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "fail":
            arg = node.args[1]
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            if len(node.value.elts) != 3:
                continue
            arg = node.value.elts[1]
        else:
            continue
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            words.add(arg.value)
    return words


def test_verify_export_speaks_the_tamper_vocabulary() -> None:
    checkpoint_problems = {"untrusted_checkpoint", "no_checkpoint", "unwitnessed"}
    assert _export_problems() == {k.value for k in TamperKind} | checkpoint_problems
    assert not {"changed", "missing"} & _export_problems()
