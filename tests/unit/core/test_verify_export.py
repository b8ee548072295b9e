"""The standalone verifier: every kind of tampering found from an export alone."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker import verify_export as ve
from broker.core.audit_chain import GENESIS_HASH, canonical_bytes, compute_hash, seal
from broker.core.checkpoint import Checkpoint, NoteSigner, sign_note
from broker.core.merkle import Frontier, leaf_hash

ORIGIN = "broker.test/audit-log"
T1, T2, T3 = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"


def entries(n: int) -> list[dict]:
    out, prev = [], GENESIS_HASH
    for i in range(1, n + 1):
        e = seal(
            {
                "seq": i,
                "time": f"2026-01-01T00:00:{i % 60:02d}.000000Z",
                "event": "transfer.delivered",
                "actor": "broker",
                "user_id": f"u{i % 3}",
                "connector_id": "acme",
                "categories": ["user.name"],
                "field_paths": ["author.name"],
                "purpose": "Show who \u00e9dited it",
                "details": {"n": i, "seq": 999, "note": 'a "quoted" ,"seq":7, value'},
            },
            prev,
        )
        prev = e.hash
        out.append(e.to_dict())
    return out


def line(e: dict) -> bytes:
    content = canonical_bytes({k: v for k, v in e.items() if k not in ("hash", "prev_hash")})
    return b'{"entry":%s,"hash":"%s","prev_hash":"%s"}\n' % (
        content,
        e["hash"].encode(),
        e["prev_hash"].encode(),
    )


def rechain(es: list[dict]) -> list[dict]:
    """What an attacker with the database but not the key does: recompute every hash."""
    prev, out = GENESIS_HASH, []
    for e in es:
        content = {k: v for k, v in e.items() if k not in ("hash", "prev_hash")}
        h = compute_hash(content, prev)
        out.append({**content, "prev_hash": prev, "hash": h})
        prev = h
    return out


def root(es: list[dict], size: int) -> bytes:
    f = Frontier()
    for e in es[:size]:
        f.append(
            leaf_hash(
                canonical_bytes({k: v for k, v in e.items() if k not in ("hash", "prev_hash")})
            )
        )
    return f.root()


class Log:
    def __init__(self, tmp_path: Path, n: int = 40) -> None:
        self.dir = tmp_path
        self.es = entries(n)
        self.key = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
        self.notes: list[str] = []

    def checkpoint(self, size: int, *, es: list[dict] | None = None, key: NoteSigner | None = None,
                   time: str = T2) -> str:  # fmt: skip
        cp = Checkpoint(ORIGIN, size, root(es or self.es, size), time)
        note = sign_note(cp.text(), [key or self.key])
        self.notes.append(note)
        return note

    def keys(self, extra: str = "") -> str:
        return self.key.verifier.vkey + extra + "\n"

    def verify(self, es: list[dict] | None = None, keys: str | None = None, **kw) -> ve.Report:
        path = self.dir / "log.jsonl"
        path.write_bytes(b"".join(line(e) for e in (self.es if es is None else es)))
        cps, refused = ve.read_checkpoints(
            "".join(n + "\n" for n in self.notes), ve.load_keys(keys or self.keys())
        )
        return ve.verify_export(str(path), cps, refused, **kw)


@pytest.fixture
def log(tmp_path: Path) -> Log:
    lg = Log(tmp_path)
    lg.checkpoint(20)
    lg.checkpoint(35)
    return lg


def test_an_intact_export_verifies(log: Log) -> None:
    r = log.verify()
    assert r.ok and r.problem is None
    assert (r.entries, r.verified, r.checkpoints, r.unsigned_tail) == (40, 35, 2, 5)


def test_modified_entry(log: Log) -> None:
    es = [dict(e) for e in log.es]
    es[11]["purpose"] = "Sell it"
    r = log.verify(es)
    assert (r.ok, r.problem, r.first_bad_seq) == (False, "modified", 12)


def test_modified_and_rehashed_entry(log: Log) -> None:
    es = [dict(e) for e in log.es]
    es[11]["purpose"] = "Sell it"
    es[11]["hash"] = compute_hash(
        {k: v for k, v in es[11].items() if k not in ("hash", "prev_hash")}, es[11]["prev_hash"]
    )
    r = log.verify(es)
    assert (r.problem, r.first_bad_seq) == ("modified", 12)
    assert "re-hashed" in r.message


def test_modified_with_the_whole_chain_recomputed(log: Log) -> None:
    es = [dict(e) for e in log.es]
    es[24]["categories"] = ["user.contact.email"]
    r = log.verify(rechain(es))
    # the chain is valid: only the signed root shows it, between checkpoints 20 and 35
    assert (r.problem, r.first_bad_seq) == ("modified", 21)
    assert "entries 21 to 35" in r.message


def test_deleted_entry(log: Log) -> None:
    r = log.verify(log.es[:9] + log.es[10:])
    assert (r.problem, r.first_bad_seq) == ("deleted", 10)


def test_deleted_renumbered_and_rechained(log: Log) -> None:
    es = [dict(e) for e in log.es[:9] + log.es[10:]]
    for i, e in enumerate(es, 1):
        e["seq"] = i
    r = log.verify(rechain(es))
    assert (r.problem, r.first_bad_seq) == ("modified", 1)


def test_inserted_entry(log: Log) -> None:
    r = log.verify([*log.es[:15], log.es[3], *log.es[15:]])
    assert (r.problem, r.first_bad_seq) == ("inserted", 16)


def test_reordered_entries(log: Log) -> None:
    es = list(log.es)
    es[6], es[7] = es[7], es[6]
    r = log.verify(es)
    assert (r.problem, r.first_bad_seq) == ("reordered", 7)


def test_truncated_log(log: Log) -> None:
    r = log.verify(log.es[:30])
    assert (r.problem, r.first_bad_seq) == ("truncated", 31)
    # cut after the last checkpoint: not detectable, and said so by unsigned_tail
    assert log.verify(log.es[:36]).ok


def test_forked_checkpoints_of_one_size(log: Log) -> None:
    es = [dict(e) for e in log.es]
    es[2]["purpose"] = "another history"
    log.checkpoint(20, es=rechain(es))
    r = log.verify()
    assert (r.problem, r.first_bad_seq) == ("forked", 20)


def test_fork_across_sizes_is_told_from_tampering(log: Log) -> None:
    # the log signed 20 over one history and 30 over another; the export is the second
    other = [dict(e) for e in log.es]
    other[4]["purpose"] = "another history"
    other = rechain(other)
    lg = Log(log.dir)
    lg.es, lg.key = log.es, log.key
    lg.checkpoint(20)
    lg.checkpoint(30, es=other)
    r = lg.verify(other)
    assert (r.problem, r.first_bad_seq) == ("forked", 1)


def test_checkpoint_by_an_unknown_key_is_refused(log: Log) -> None:
    log.checkpoint(40, key=NoteSigner(ORIGIN, Ed25519PrivateKey.generate()))
    r = log.verify()
    assert (r.ok, r.problem) == (False, "untrusted_checkpoint")
    assert "signed by no known key" in r.refused[0]


def test_checkpoint_by_a_rotated_out_key_is_refused_after_its_retirement(log: Log) -> None:
    new = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    keys = log.keys(f" retired={T2}") + new.verifier.vkey + "\n"
    log.checkpoint(38, key=new, time=T3)
    assert log.verify(keys=keys).ok  # old checkpoints (T2) by the old key still verify
    log.checkpoint(40, time=T3)  # the old key signing after it was retired
    r = log.verify(keys=keys)
    assert r.problem == "untrusted_checkpoint" and "retired" in r.refused[0]


def test_a_forged_signature_is_refused(log: Log) -> None:
    log.notes[0] = log.notes[0].replace("\n20\n", "\n21\n")
    r = log.verify()
    assert r.problem == "untrusted_checkpoint" and "bad signature" in r.refused[0]


def test_no_checkpoint_proves_nothing(tmp_path: Path) -> None:
    assert Log(tmp_path).verify().problem == "no_checkpoint"


@pytest.mark.parametrize("cut", [None, 9, 27])
def test_parallel_scan_agrees_with_serial(log: Log, cut: int | None) -> None:
    es = list(log.es)
    if cut is not None:
        es[cut], es[cut + 1] = es[cut + 1], es[cut]
    serial = log.verify(es, chunk=1 << 20)
    parallel = log.verify(es, workers=2, chunk=2000)
    assert parallel.to_dict() == serial.to_dict()
    assert serial.ok is (cut is None)


def test_cli_entry_point(log: Log, capsys) -> None:
    path = log.dir / "log.jsonl"
    path.write_bytes(b"".join(line(e) for e in log.es))
    (log.dir / "log.jsonl.checkpoints").write_text("".join(n + "\n" for n in log.notes))
    (log.dir / "keys").write_text(log.keys())
    assert ve.main([str(path), "--public-key", str(log.dir / "keys"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] == 35
    path.write_bytes(b"".join(line(e) for e in log.es[:20]))
    assert ve.main([str(path), "--public-key", log.keys().strip()]) == 1
    assert "export FAILED at seq 21: truncated" in capsys.readouterr().out


def test_the_verifier_depends_on_nothing_of_the_broker() -> None:
    tree = ast.parse(inspect.getsource(ve))
    imported = {
        (node.module or "").split(".")[0]
        if isinstance(node, ast.ImportFrom)
        else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert "broker" not in imported
    allowed = {"__future__", "argparse", "base64", "hashlib", "json", "os", "sys"}
    allowed |= {"concurrent", "dataclasses", "itertools", "pathlib", "cryptography"}
    assert imported <= allowed
    assert len(inspect.getsource(ve).splitlines()) < 400
