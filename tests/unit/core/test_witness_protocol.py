"""C2SP tlog-witness and tlog-cosignature, the pure parts: formats, key ids, the
witness's checks in the spec's order, quorum time; and verify-export with witnesses."""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker import verify_export as ve
from broker.core.checkpoint import Checkpoint, NoteSigner, sign_note
from broker.core.errors import InvalidInput
from broker.core.merkle import Frontier, consistency_nodes, fold, leaf_hash, prove, root_nodes
from broker.core.witness import (
    AddCheckpoint,
    CosignatureSigner,
    CosignatureVerifier,
    LogKey,
    add_checkpoint_body,
    check_add_checkpoint,
    parse_add_checkpoint,
    parse_cosignatures,
    parse_size,
    parse_witnesses,
    quorum_time,
    split_note,
)

ORIGIN = "broker.example/audit-log"
LOG = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
LOG_KEY = LogKey.from_vkey(LOG.verifier.vkey)
W1 = CosignatureSigner("witness.example/w1", Ed25519PrivateKey.generate())
W2 = CosignatureSigner("witness.example/w2", Ed25519PrivateKey.generate())


class Tree:
    """A log of ``n`` leaves: roots and consistency proofs from the shared RFC 9162 code."""

    def __init__(self, tag: str = "a") -> None:
        self.tag, self.nodes, self.frontier = tag, {}, Frontier()

    def grow(self, n: int, tag: str | None = None) -> Tree:
        for _ in range(n):
            leaf = leaf_hash(f"{tag or self.tag}{self.frontier.size}".encode())
            for level, idx, h in self.frontier.append(leaf):
                self.nodes[(level, idx)] = h
        return self

    def root(self, size: int) -> bytes:
        return fold([self.nodes[n] for n in root_nodes(size)])

    def proof(self, old: int, new: int) -> list[bytes]:
        return prove(consistency_nodes(old, new), lambda _w: self.nodes)

    def note(self, size: int, signer: NoteSigner = LOG) -> str:
        return sign_note(Checkpoint(signer.name, size, self.root(size)).text(), [signer])


def test_checkpoints_have_no_extension_lines_and_old_ones_still_parse() -> None:
    root = hashlib.sha256(b"r").digest()
    text = Checkpoint(ORIGIN, 3, root).text()
    assert text == f"{ORIGIN}\n3\n{base64.b64encode(root).decode()}\n"
    assert Checkpoint.parse(text).time is None
    legacy = text + "time 2026-01-31T12:00:00Z\n"
    assert Checkpoint.parse(legacy).time == "2026-01-31T12:00:00Z"
    with pytest.raises(InvalidInput):
        Checkpoint.parse(text + "time yesterday\n")


def test_cosignature_line_follows_tlog_cosignature() -> None:
    body = split_note(Tree().grow(5).note(5))[0]
    line = W1.line(body, 1679315147)
    name, encoded = line.removeprefix("\u2014 ").rstrip("\n").split(" ")
    raw = base64.b64decode(encoded)
    public = W1.verifier.public
    assert name == W1.name and len(raw) == 4 + 8 + 64
    assert raw[:4] == hashlib.sha256(W1.name.encode() + b"\n\x04" + public).digest()[:4]
    assert struct.unpack(">Q", raw[4:12]) == (1679315147,)
    message = b"cosignature/v1\ntime 1679315147\n" + body.encode()
    W1.private.public_key().verify(raw[12:], message)  # raises if not over that message
    vkey = W1.verifier.vkey
    assert vkey.split("+", 2)[2] == base64.b64encode(b"\x04" + public).decode()
    assert CosignatureVerifier.from_vkey(vkey) == W1.verifier
    with pytest.raises(InvalidInput):
        CosignatureVerifier.from_vkey(LOG.verifier.vkey)  # a note key (0x01) is not one


def test_cosignatures_unknown_ignored_bad_refused() -> None:
    note = Tree().grow(4).note(4)
    body, lines = split_note(note)
    c1, c2 = W1.line(body, 10), W2.line(body, 20)
    got = parse_cosignatures(body, [*lines, c1, c2], [W1.verifier])
    assert [(c.witness, c.timestamp) for c in got] == [(W1.name, 10)]
    other = split_note(Tree().grow(5).note(5))[0]
    with pytest.raises(InvalidInput, match="does not verify"):
        parse_cosignatures(body, [W1.line(other, 10)], [W1.verifier])


def test_add_checkpoint_body_round_trip_and_malformed() -> None:
    t = Tree().grow(9)
    proof = t.proof(4, 9)
    body = add_checkpoint_body(4, proof, t.note(9))
    text = body.decode()
    assert text.startswith("old 4\n") and text.count("\n\n") == 2
    assert parse_add_checkpoint(body) == AddCheckpoint(4, proof, t.note(9))
    for bad in (b"old 04\n\nx", b"new 4\n\nx", b"old 4\n" + b"A" * 44 + b"\n\nx", b"old 4\nx"):
        with pytest.raises(InvalidInput):
            parse_add_checkpoint(bad)
    too_long = b"old 1\n" + (base64.b64encode(b"\0" * 32) + b"\n") * 64 + b"\nx"
    with pytest.raises(InvalidInput, match="63"):
        parse_add_checkpoint(too_long)
    assert parse_size("17\n") == 17
    with pytest.raises(InvalidInput):
        parse_size("17")


def _check(t: Tree, old: int, size: int, recorded, proof=None, keys=(LOG_KEY,)):
    proof = t.proof(old, size) if proof is None and 0 < old < size else proof or []
    return check_add_checkpoint(AddCheckpoint(old, proof, t.note(size)), list(keys), recorded)


def test_the_witness_checks_in_the_spec_order() -> None:
    t = Tree().grow(12)
    first = _check(t, 0, 7, None)
    assert (first.status, first.size, first.root) == (200, 7, t.root(7))
    recorded = (7, t.root(7))
    assert _check(t, 7, 12, recorded).status == 200
    assert _check(t, 7, 7, recorded).status == 200  # the same checkpoint again
    # unknown origin 404; no trusted signature 403
    other = NoteSigner("other.example/log", Ed25519PrivateKey.generate())
    unknown = AddCheckpoint(0, [], t.note(3, other))
    assert check_add_checkpoint(unknown, [LOG_KEY], None).status == 404
    stranger = LogKey.from_vkey(NoteSigner(ORIGIN, Ed25519PrivateKey.generate()).verifier.vkey)
    assert _check(t, 7, 12, recorded, keys=(stranger,)).status == 403
    # old larger than the checkpoint: 400; old not the recorded size: 409 with the size
    assert _check(t, 12, 7, recorded, proof=[]).status == 400
    stale = _check(t, 0, 12, recorded)
    assert (stale.status, stale.body, stale.evidence) == (409, "7\n", False)
    # a proof that does not verify: 422 (kept as evidence); proof from 0 must be empty
    forged = _check(t, 7, 12, recorded, proof=t.proof(6, 12))
    assert (forged.status, forged.evidence) == (422, True)
    assert _check(t, 0, 7, None, proof=t.proof(3, 7)).status == 422
    # another history: its proof from the recorded size fails; same size, other root: 409
    fork = Tree().grow(7).grow(5, tag="b")
    assert _check(fork, 7, 12, (7, t.root(7))).status == 200  # shares the first 7
    fork2 = Tree().grow(5).grow(7, tag="b")
    assert _check(fork2, 7, 12, (7, t.root(7))).status == 422
    same = _check(fork2, 7, 7, (7, t.root(7)))
    assert (same.status, same.body) == (409, "7\n")


def test_quorum_time_and_witness_settings() -> None:
    assert quorum_time([30, 10, 20], 2) == 20  # when the second witness had cosigned
    assert quorum_time([30], 2) is None
    v1, v2 = W1.verifier.vkey, W2.verifier.vkey
    ws = parse_witnesses(f"https://w1.example/ {v1},\n http://127.0.0.1:7380 {v2}")
    assert [w.add_checkpoint_url for w in ws] == [
        "https://w1.example/add-checkpoint",
        "http://127.0.0.1:7380/add-checkpoint",
    ]
    for bad in (f"http://w1.example {v1}", f"https://w1.example {v1}, https://w2.example {v1}",
                "https://w1.example", f"https://w1.example {LOG.verifier.vkey}"):  # fmt: skip
        with pytest.raises(InvalidInput):
            parse_witnesses(bad)


def _write(tmp_path: Path, notes: list[str], name: str = "cps") -> Path:
    path = tmp_path / name
    path.write_text("".join(n + "\n" for n in notes))
    return path


def _cosign(note: str, *stamps: tuple[CosignatureSigner, int]) -> str:
    body = split_note(note)[0]
    return note + "".join(w.line(body, ts) for w, ts in stamps)


def test_verify_export_reads_cosignatures_and_quorum(tmp_path: Path) -> None:
    t = Tree().grow(6)
    keys = ve.load_keys(LOG.verifier.vkey)
    wkeys = ve.load_keys(f"{W1.verifier.vkey}\n{W2.verifier.vkey}\n", b"\x04")
    text = _write(tmp_path, [_cosign(t.note(6), (W1, 100), (W2, 50))]).read_text()
    (cp,), refused = ve.read_checkpoints(text, keys, wkeys, 2)
    assert (cp.size, cp.witnessed, refused) == (6, 100, [])
    (cp,), _ = ve.read_checkpoints(text, keys, wkeys, 1)
    assert cp.witnessed == 50
    (cp,), _ = ve.read_checkpoints(text, keys)
    assert cp.witnessed is None  # no witness keys: not looked at
    one = _write(tmp_path, [_cosign(t.note(6), (W1, 100))]).read_text()
    assert ve.read_checkpoints(one, keys, wkeys, 2)[0][0].witnessed is None
    bad = t.note(6) + W1.line(split_note(t.note(5))[0], 100)
    assert "bad cosignature" in ve.read_checkpoints(bad, keys, wkeys, 1)[1][0]
    with pytest.raises(ValueError):
        ve.load_keys(W1.verifier.vkey)  # a witness key is not a log key


def test_the_retired_key_rule_uses_witnessed_time(tmp_path: Path) -> None:
    t = Tree().grow(6)
    retired = "2026-01-01T00:00:00Z"  # = 1767225600
    keys = ve.load_keys(f"{LOG.verifier.vkey} retired={retired}")
    wkeys = ve.load_keys(W1.verifier.vkey, b"\x04")
    # an old-format checkpoint dated before retirement, but first witnessed after it
    legacy = sign_note(Checkpoint(ORIGIN, 6, t.root(6), "2025-06-01T00:00:00Z").text(), [LOG])
    late = _cosign(legacy, (W1, 1767225601))
    assert ve.read_checkpoints(late, keys)[1] == []  # without witnesses: its own time line
    assert "retired" in ve.read_checkpoints(late, keys, wkeys, 1)[1][0]
    early = _cosign(t.note(6), (W1, 1767225600))
    assert ve.read_checkpoints(early, keys, wkeys, 1)[1] == []


def test_verify_export_with_witness_keys_end_to_end(tmp_path: Path, capsys) -> None:
    lines, prev, frontier = [], "0" * 64, Frontier()
    from broker.core.audit_chain import seal

    for i in range(1, 9):
        content = {"seq": i, "time": "2026-01-01T00:00:00.000000Z", "event": "token.refreshed"}
        e = seal({**content, "actor": "broker", "details": {"i": i}}, prev)
        prev = e.hash
        content = e.canonical()
        lines.append(b'{"entry":%s,"hash":"%s","prev_hash":"%s"}\n'
                     % (content, e.hash.encode(), e.prev_hash.encode()))  # fmt: skip
        frontier.append(leaf_hash(content))
        if i == 5:
            root5 = frontier.root()
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(lines))
    n5 = sign_note(Checkpoint(ORIGIN, 5, root5).text(), [LOG])
    n8 = sign_note(Checkpoint(ORIGIN, 8, frontier.root()).text(), [LOG])
    cps = _write(tmp_path, [_cosign(n5, (W1, 10), (W2, 11)), _cosign(n8, (W1, 12))])
    keys = tmp_path / "keys"
    keys.write_text(LOG.verifier.vkey + "\n")
    wk = tmp_path / "witnesses"
    wk.write_text(f"{W1.verifier.vkey}\n{W2.verifier.vkey}\n")
    base = [str(log), "--public-key", str(keys), "--checkpoint", str(cps), "--workers", "1"]
    assert ve.main(base) == 0
    assert "8 covered by 2 signed checkpoint(s); 0 after" in capsys.readouterr().out
    assert ve.main([*base, "--witness-keys", str(wk), "--witness-quorum", "2"]) == 0
    out = capsys.readouterr().out
    assert "5 covered by 2 signed checkpoint(s), 1 witnessed; 3 after the last" in out
    only8 = _write(tmp_path, [_cosign(n8, (W1, 12))], "only8")
    argv = [str(log), "--public-key", str(keys), "--checkpoint", str(only8), "--workers", "1"]
    assert ve.main([*argv, "--witness-keys", str(wk), "--witness-quorum", "2"]) == 1
    assert "unwitnessed" in capsys.readouterr().out
    assert ve.main([*argv, "--witness-keys", str(wk), "--witness-quorum", "3"]) == 2
