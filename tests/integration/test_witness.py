"""Witnessed checkpoints over real loopback HTTP: the broker's witness (``broker witness
serve``'s app) and a second, independent witness written here from the C2SP
tlog-witness / tlog-cosignature text; cosignatures, quorum, 409 resync, a witness that is
down, a forked broker refused by both witnesses and caught by ``broker audit monitor``."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from contextlib import closing
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import text
from sqlmodel import Session, col, select

from broker.cli import main
from broker.core.checkpoint import SigningKeyRing
from broker.core.errors import Conflict
from broker.core.witness import CosignatureVerifier, parse_cosignatures, split_note
from broker.flows.checkpoints import sign_checkpoint, start_checkpointing
from broker.flows.keys import create_api_key
from broker.flows.witnesses import cosignatures_of
from broker.runtime import Runtime, build_runtime
from broker.settings import Settings
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.merkle_models import CheckpointRow
from broker.web.app import create_app
from broker.witness_server import (
    DB_FILE,
    WitnessApp,
    WitnessState,
    load_log_keys,
    load_or_create_key,
)
from tests.conftest import LiveServer, free_socket

ORIGIN = "broker.test/audit-log"


# --- an independent witness, from the spec text only --------------------------------------


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _rfc9162_consistent(first: int, second: int, h1: bytes, h2: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2, step by step."""
    if first == second:
        return not proof and h1 == h2
    if not proof:
        return False
    if first & (first - 1) == 0:  # an exact power of two: prepend first_hash
        proof = [h1, *proof]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _h(b"\x01", c, fr), _h(b"\x01", c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _h(b"\x01", sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == h1 and sr == h2 and sn == 0


class ReferenceWitness:
    """tlog-witness ``add-checkpoint`` with an in-memory record and a lock around
    check-and-store; Ed25519 ``cosignature/v1``."""

    def __init__(self, log_vkey: str, name: str = "reference.test/w2") -> None:
        origin, kid, b64 = log_vkey.split("+", 2)
        raw = base64.b64decode(b64)
        assert raw[0] == 1 and _h(origin.encode(), b"\n", raw)[:4].hex() == kid
        self.log = (origin, bytes.fromhex(kid), raw[1:])
        self.name, self.key = name, Ed25519PrivateKey.generate()
        self.public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = _h(name.encode(), b"\n\x04", self.public)[:4]
        self.state: dict[str, tuple[int, bytes]] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[int, int, int]] = []  # (old, size, status)
        self.port = 0
        self.server: ThreadingHTTPServer | None = None

    @property
    def vkey(self) -> str:
        encoded = base64.b64encode(bytes([4]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, body: bytes) -> tuple[int, str, str]:
        head, _, note = body.decode().partition("\n\n")
        lines = head.split("\n")
        old = int(lines[0].removeprefix("old "))
        proof = [base64.b64decode(x) for x in lines[1:]]
        text, _, sigs = note.partition("\n\n")
        text += "\n"
        origin, size_line, root_b64 = text.split("\n")[:3]
        size, root = int(size_line), base64.b64decode(root_b64)
        if origin != self.log[0]:
            return self._log(old, size, 404, "unknown origin")
        signed = False
        for line in sigs.strip("\n").split("\n"):
            name, _, sig = line.removeprefix("\u2014 ").partition(" ")
            raw = base64.b64decode(sig)
            if name == origin and raw[:4] == self.log[1]:
                try:
                    Ed25519PublicKey.from_public_bytes(self.log[2]).verify(raw[4:], text.encode())
                    signed = True
                except InvalidSignature:
                    pass
        if not signed:
            return self._log(old, size, 403, "not signed")
        if old > size:
            return self._log(old, size, 400, "old > size")
        with self.lock:
            have_size, have_root = self.state.get(origin, (0, b""))
            if old != have_size:
                return self._log(old, size, 409, f"{have_size}\n")
            if old == size and have_root and root != have_root:
                return self._log(old, size, 409, f"{have_size}\n")
            if 0 < old < size and not _rfc9162_consistent(old, size, have_root, root, proof):
                return self._log(old, size, 422, "inconsistent")
            self.state[origin] = (size, root)
        now = int(datetime.now(UTC).timestamp())
        message = b"cosignature/v1\ntime %d\n" % now + text.encode()
        sig = self.key_id + now.to_bytes(8, "big") + self.key.sign(message)
        line = f"\u2014 {self.name} {base64.b64encode(sig).decode()}\n"
        return self._log(old, size, 200, line)

    def _log(self, old: int, size: int, status: int, body: str) -> tuple[int, str, str]:
        self.requests.append((old, size, status))
        return status, body, "text/x.tlog.size" if status == 409 else "text/plain"

    def start(self) -> ReferenceWitness:
        witness = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, text, ctype = witness.answer(body)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


# --- a broker with two witnesses ------------------------------------------------------------


class Witnessed:
    """A broker (settings from the environment, as the CLI reads them), the broker's own
    witness app on loopback, and the reference witness."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
        for name in list(os.environ):
            if name.startswith("BROKER_"):
                monkeypatch.delenv(name)
        self.tmp, self.monkeypatch = tmp, monkeypatch
        self.home = tmp / "home"
        env = {"BROKER_HOME": str(self.home), "BROKER_DATABASE_URL": database_url,
               "BROKER_CHECKPOINT_ORIGIN": ORIGIN, "BROKER_CHECKPOINT_EVERY": "0",
               "BROKER_CHECKPOINT_INTERVAL": "0"}  # fmt: skip
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        ring, _ = SigningKeyRing.load_or_create(Settings().resolved_signing_keys_file, ORIGIN)
        self.log_vkey = ring.verifiers()[0].vkey
        self.keys_file = tmp / "broker.keys"
        self.keys_file.write_text(self.log_vkey + "\n")
        signer, _ = load_or_create_key(tmp / "w1", "broker-witness.test/w1")
        self.state = WitnessState(tmp / "w1" / DB_FILE)
        app = WitnessApp(self.state, signer, load_log_keys(self.log_vkey))
        self.ours = LiveServer(app, free_socket()).start()
        self.ours_vkey = signer.verifier.vkey
        self.ref = ReferenceWitness(self.log_vkey).start()
        self.witness_keys = tmp / "witnesses.keys"
        self.witness_keys.write_text(f"{self.ours_vkey}\n{self.ref.vkey}\n")
        self.runtimes: list[Runtime] = []

    def configure(self, quorum: int = 2, **extra: str) -> Runtime:
        ws = f"{self.ours.url} {self.ours_vkey},{self.ref.url} {self.ref.vkey}"
        self.monkeypatch.setenv("BROKER_WITNESSES", ws)
        self.monkeypatch.setenv("BROKER_WITNESS_QUORUM", str(quorum))
        for k, v in extra.items():
            self.monkeypatch.setenv(k, v)
        rt = build_runtime(Settings(), plugins=[], upgrade=True)
        self.runtimes.append(rt)
        return rt

    def close(self) -> None:
        for rt in self.runtimes:
            rt.close()
        self.ours.stop()
        if self.ref.server is not None:
            self.ref.stop()


@pytest.fixture
def witnessed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str):
    setup = Witnessed(tmp_path, monkeypatch, database_url)
    yield setup
    setup.close()


def append(rt: Runtime, n: int, tag: str = "a") -> None:
    with session_scope(rt.engine) as session:
        for j in range(n):
            append_event(
                session, head_file=rt.settings.audit_head_file, time=datetime.now(UTC),
                event="transfer.delivered", actor="test", details={"tag": tag, "j": j},
            )  # fmt: skip


def _stored(rt: Runtime) -> list[CheckpointRow]:
    with Session(rt.engine) as session:
        return list(session.exec(select(CheckpointRow).order_by(col(CheckpointRow.id))).all())


def test_two_witnesses_cosign_and_the_checkpoint_is_published(witnessed: Witnessed, capsys) -> None:
    rt = witnessed.configure(quorum=2)
    append(rt, 5)
    row = sign_checkpoint(rt)
    assert row.witnessed_time is not None
    sigs = cosignatures_of(rt.engine, row.id)
    assert sorted(s.witness for s in sigs) == ["broker-witness.test/w1", "reference.test/w2"]
    body, lines = split_note(row.note)
    assert len(lines) == 3  # the log's signature and two cosignatures
    verifiers = [CosignatureVerifier.from_vkey(witnessed.ours_vkey),
                 CosignatureVerifier.from_vkey(witnessed.ref.vkey)]  # fmt: skip
    got = parse_cosignatures(body, lines, verifiers)
    assert len(got) == 2 and row.witnessed_time == datetime.fromtimestamp(
        max(c.timestamp for c in got), UTC
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "\ntime " not in body  # no extension lines: time comes from the cosignatures
    append(rt, 4, tag="b")
    second = sign_checkpoint(rt)
    assert second.witnessed_time and witnessed.ref.requests[-1] == (5, 9, 200)
    assert witnessed.state.recorded(ORIGIN)[0] == 9
    # the published note over HTTP carries the cosignatures
    _, key = create_api_key(rt.engine, role="auditor")
    server = LiveServer(create_app(rt), free_socket()).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as api:
            assert api.get("/v1/audit/checkpoint", params={"format": "note"}).text == second.note
            assert api.get("/v1/audit/checkpoint").json()["witnessed_time"] == second.witnessed_time
    finally:
        server.stop()
    # offline: the export verifies against the witness keys and the quorum
    export = str(witnessed.tmp / "log.jsonl")
    assert main(["audit", "export-log", "-o", export]) == 0
    keys, wkeys = str(witnessed.keys_file), str(witnessed.witness_keys)
    base = ["audit", "verify-export", export, "--public-key", keys, "--workers", "1"]
    assert main([*base, "--witness-keys", wkeys, "--quorum", "2"]) == 0
    assert "9 covered by 2 signed checkpoint(s), 2 witnessed; 0 after" in capsys.readouterr().out
    only_ref = witnessed.tmp / "ref.keys"
    only_ref.write_text(witnessed.ref.vkey + "\n")
    assert main([*base, "--witness-keys", str(only_ref), "--quorum", "2"]) == 2  # 2 of 1
    assert main(["audit", "verify", "--witness-keys", wkeys, "--quorum", "2"]) == 0
    out = capsys.readouterr().out
    assert "audit log intact" in out and "witnessed: 2 checkpoint(s)" in out
    assert main(["audit", "verify", "--witness-keys", str(only_ref), "--quorum", "2"]) == 1
    assert "witnesses FAILED" in capsys.readouterr().out


def test_a_witness_down_never_stops_the_log_and_quorum_decides(witnessed: Witnessed) -> None:
    rt = witnessed.configure(quorum=2, BROKER_CHECKPOINT_EVERY="4")
    handle = start_checkpointing(rt, timer=False)
    _, key = create_api_key(rt.engine, role="auditor")
    server = LiveServer(create_app(rt), free_socket()).start()
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"})
    try:
        witnessed.ref.stop()  # down: connections refused
        append(rt, 4)
        handle.flush()
        (first,) = _stored(rt)
        assert first.tree_size == 4 and first.witnessed_time is None  # 1 of 2: not published
        assert len(cosignatures_of(rt.engine, first.id)) == 1
        assert api.get("/v1/audit/checkpoint", params={"format": "note"}).status_code == 404
        assert api.get("/v1/audit/checkpoint").json()["tree_size"] == 4  # still signed
        witnessed.ref.start()  # back, on the same port
        append(rt, 4, tag="b")
        handle.flush()
        second = _stored(rt)[-1]
        assert second.tree_size == 8 and second.witnessed_time is not None
        note = api.get("/v1/audit/checkpoint", params={"format": "note"})
        assert note.status_code == 200 and note.text == second.note
        # the reference never saw size 4: it was asked from 0, then from 8 on
        assert witnessed.ref.requests == [(0, 8, 200)]
    finally:
        handle.stop()
        api.close()
        server.stop()


def test_409_resync_to_the_size_the_witness_reports(witnessed: Witnessed) -> None:
    rt = witnessed.configure(quorum=1)
    append(rt, 5)
    assert sign_checkpoint(rt).witnessed_time
    # a process that knows nothing of what the witnesses cosigned (here: the records of
    # their cosignatures are gone) starts from 0; each witness says 5, and it resends
    with rt.engine.begin() as conn:
        conn.execute(text("DELETE FROM checkpoint_cosignatures"))
    append(rt, 4, tag="b")
    row = sign_checkpoint(rt)
    assert witnessed.ref.requests == [(0, 5, 200), (0, 9, 409), (5, 9, 200)]
    assert len(cosignatures_of(rt.engine, row.id)) == 2
    assert witnessed.state.recorded(ORIGIN)[0] == 9


def test_checkpoint_sizes_never_decrease(witnessed: Witnessed) -> None:
    rt = witnessed.configure(quorum=1)
    for n in (3, 0, 2, 0, 5):
        append(rt, n) if n else None
        sign_checkpoint(rt)
    sizes = [r.tree_size for r in _stored(rt)]
    assert sizes == sorted(sizes) == [3, 3, 5, 5, 10]
    with rt.engine.begin() as conn:  # the head rolled back below a signed checkpoint
        conn.execute(text("UPDATE audit_head SET seq = 7 WHERE id = 1"))
    with pytest.raises(Conflict, match="refusing to sign a smaller tree"):
        sign_checkpoint(rt)
    assert [r.tree_size for r in _stored(rt)] == sizes


def _monitor(witnessed: Witnessed, url: str) -> list[str]:
    return ["audit", "monitor", "--url", url, "--keys", str(witnessed.keys_file),
            "--state", str(witnessed.tmp / "monitor"), "--once"]  # fmt: skip


def test_a_forked_broker_is_refused_by_witnesses_and_caught_by_the_monitor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # Two databases from one snapshot: SQLite files, whatever the test database.
    witnessed = Witnessed(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'a.db'}")
    servers: list[LiveServer] = []
    try:
        a = witnessed.configure(quorum=2)
        _, key = create_api_key(a.engine, role="auditor")
        monkeypatch.setenv("BROKER_AUDIT_KEY", key)
        append(a, 6)
        assert sign_checkpoint(a).witnessed_time
        servers.append(LiveServer(create_app(a), free_socket()).start())
        assert main(_monitor(witnessed, servers[0].url)) == 0
        assert "first checkpoint recorded: size 6" in capsys.readouterr().out
        # the snapshot: database and BROKER_HOME (signing key included)
        with (
            closing(sqlite3.connect(tmp_path / "a.db")) as src,
            closing(sqlite3.connect(tmp_path / "b.db")) as dst,
        ):
            src.backup(dst)  # a consistent copy (the WAL included)
        shutil.copytree(witnessed.home, tmp_path / "home-b")
        append(a, 3)
        assert sign_checkpoint(a).witnessed_time
        assert main(_monitor(witnessed, servers[0].url)) == 0
        assert "checkpoint 9 extends 6" in capsys.readouterr().out
        # broker B: the same key and history up to 6, then other entries
        monkeypatch.setenv("BROKER_HOME", str(tmp_path / "home-b"))
        monkeypatch.setenv("BROKER_DATABASE_URL", f"sqlite:///{tmp_path / 'b.db'}")
        b = witnessed.configure(quorum=2)
        append(b, 4, tag="other")
        forked = sign_checkpoint(b)
        assert forked.tree_size == 10 and forked.witnessed_time is None
        assert cosignatures_of(b.engine, forked.id) == []
        assert witnessed.ref.requests[-2:] == [(6, 10, 409), (9, 10, 422)]
        (evidence,) = witnessed.state.evidence()
        assert (evidence["status"], evidence["size"]) == (422, 10)
        assert witnessed.state.recorded(ORIGIN)[0] == 9  # A's history stands
        # B publishes only what the witnesses cosigned: an auditor sees it shrink
        servers.append(LiveServer(create_app(b), free_socket()).start())
        assert main(_monitor(witnessed, servers[1].url)) == 1
        assert "ALARM: the log shrank: size 6 after size 9" in capsys.readouterr().err
        # B without witnesses serves its own latest checkpoint: a fork
        monkeypatch.setenv("BROKER_WITNESSES", "")
        b_alone = build_runtime(Settings(), plugins=[])
        witnessed.runtimes.append(b_alone)
        servers.append(LiveServer(create_app(b_alone), free_socket()).start())
        assert main(_monitor(witnessed, servers[2].url)) == 1
        err = capsys.readouterr().err
        assert "ALARM: fork: checkpoint 10 does not extend checkpoint 9" in err
        state = witnessed.tmp / "monitor"
        assert "\n9\n" in (state / "latest.note").read_text()  # still what it trusted
        assert len(list(state.glob("alarm-*.txt"))) >= 1
        assert main(_monitor(witnessed, servers[0].url)) == 0  # A still checks out
    finally:
        for server in servers:
            server.stop()
        witnessed.close()


def test_broker_witness_serve_keeps_its_key_and_state(tmp_path: Path) -> None:
    from broker.core.checkpoint import Checkpoint, NoteSigner, sign_note
    from broker.core.merkle import EMPTY_ROOT

    log = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    note = sign_note(Checkpoint(ORIGIN, 3, EMPTY_ROOT).text(), [log])
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "broker.cli", "witness", "serve", "--state", str(state),
            "--name", "cli.test/w3", "--log-key", log.verifier.vkey, "--port", "0"]  # fmt: skip

    def run() -> tuple[subprocess.Popen[str], str, str]:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)  # noqa: S603  (our CLI)
        vkey = url = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if "verifier key" in line:
                vkey = line.rsplit(" ", 1)[1].strip()
            if "listening on" in line:
                url = line.rsplit(" ", 1)[1].strip()
                break
        return proc, vkey, url

    proc, vkey, url = run()
    try:
        resp = httpx.post(url, content=f"old 0\n\n{note}".encode(), timeout=10)
        assert resp.status_code == 200
        body, _ = split_note(note)
        (cosig,) = parse_cosignatures(body, [resp.text], [CosignatureVerifier.from_vkey(vkey)])
        assert cosig.witness == "cli.test/w3"
        assert stat.S_IMODE(os.stat(state / "witness-key.json").st_mode) == 0o600
        bad = httpx.post(url, content=b"old x\n\nnot a note", timeout=10)
        assert bad.status_code == 400 and "Traceback" not in bad.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    proc, vkey_again, url = run()  # restarted: same key, same record
    try:
        assert vkey_again == vkey
        resp = httpx.post(url, content=f"old 0\n\n{note}".encode(), timeout=10)
        assert (resp.status_code, resp.text) == (409, "3\n")
        assert resp.headers["content-type"] == "text/x.tlog.size"
        assert json.loads((state / "witness-key.json").read_text())["name"] == "cli.test/w3"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_rotation_retires_the_key_no_earlier_than_its_last_witnessed_checkpoint(
    witnessed: Witnessed, capsys, caplog: pytest.LogCaptureFixture
) -> None:
    rt = witnessed.configure(quorum=2)
    append(rt, 5)
    assert main(["keys", "rotate", "--signing"]) == 0
    rows = _stored(rt)
    last_old, first_new = rows[-2], rows[-1]
    assert last_old.witnessed_time is not None  # cosigned before the key was retired
    ring = json.loads(Settings().resolved_signing_keys_file.read_text())
    retired = next(k["retired_at"] for k in ring["keys"] if k["kid"] == last_old.key_id)
    assert retired >= last_old.witnessed_time
    # the witnesses know only the old key: they refuse the new key's checkpoint (403)
    assert first_new.witnessed_time is None
    assert "does not trust the key" in caplog.text
    capsys.readouterr()
    keys = witnessed.tmp / "all.keys"
    assert main(["audit", "public-key"]) == 0
    keys.write_text(capsys.readouterr().out)
    assert "retired=" in keys.read_text()
    export = str(witnessed.tmp / "log.jsonl")
    assert main(["audit", "export-log", "-o", export]) == 0
    argv = ["audit", "verify-export", export, "--public-key", str(keys), "--workers", "1",
            "--witness-keys", str(witnessed.witness_keys), "--quorum", "2"]  # fmt: skip
    assert main(argv) == 0
    assert "1 witnessed; 1 after the last" in capsys.readouterr().out
