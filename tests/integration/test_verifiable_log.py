"""The Merkle tree beside the chain, signed checkpoints, proofs, export and verify-export,
signing-key rotation, and the migration that builds the tree of an existing log."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, text
from sqlmodel import Session, select

from broker.cli import main
from broker.core.audit_chain import GENESIS_HASH, seal
from broker.core.checkpoint import Checkpoint, NoteSigner, open_note, sign_note, split_notes
from broker.core.merkle import Frontier, leaf_hash, verify_consistency, verify_inclusion
from broker.flows.checkpoints import sign_checkpoint, start_checkpointing
from broker.flows.keys import create_api_key
from broker.runtime import Runtime, build_runtime
from broker.settings import Settings
from broker.store.audit import append_event, iter_entries
from broker.store.db import create_db_engine, session_scope, upgrade_schema
from broker.store.merkle_models import CheckpointRow, MerkleNode
from broker.store.tree import root_at
from broker.web.app import create_app
from tests.conftest import LiveServer, free_socket


def append(rt: Runtime, n: int, *, per_tx: int = 1, start: int = 0) -> None:
    for i in range(start, start + n, per_tx):
        with session_scope(rt.engine) as session:
            for j in range(i, min(i + per_tx, start + n)):
                append_event(
                    session, head_file=rt.settings.audit_head_file, time=datetime.now(UTC),
                    event="transfer.delivered", actor="test", user_id=f"u{j}",
                    connector_id="example", categories=["user.name"], details={"j": j},
                )  # fmt: skip


def reference_root(rt: Runtime) -> tuple[bytes, int]:
    f = Frontier()
    for entry in iter_entries(rt.engine):
        f.append(leaf_hash(entry.canonical()))
    return f.root(), f.size


@pytest.fixture
def rt(make_settings) -> Runtime:
    runtime = build_runtime(
        make_settings(checkpoint_every=0, checkpoint_interval=0), plugins=[], upgrade=True
    )
    yield runtime
    runtime.close()


def test_appends_keep_chain_tree_and_head_in_step(rt: Runtime) -> None:
    append(rt, 23)
    append(rt, 14, per_tx=3, start=23)  # several appends in one transaction
    with Session(rt.engine) as session:
        assert root_at(session, 37) == reference_root(rt)[0]
        nodes = session.exec(select(func.count()).select_from(MerkleNode)).one()
    assert nodes == 2 * 37 - bin(37).count("1")  # every complete subtree, once


def test_a_rolled_back_append_and_another_process_leave_the_tree_right(
    rt: Runtime, database_url: str
) -> None:
    append(rt, 5)
    with pytest.raises(RuntimeError), session_scope(rt.engine) as session:
        append_event(
            session, head_file=None, time=datetime.now(UTC), event="key.rotated", actor="x"
        )
        raise RuntimeError("rolled back")
    other = create_db_engine(database_url)  # a second broker process on the same database
    with session_scope(other) as session:
        append_event(
            session, head_file=None, time=datetime.now(UTC), event="key.rotated", actor="y"
        )
    other.dispose()
    append(rt, 4, start=5)
    with Session(rt.engine) as session:
        assert root_at(session, 10) == reference_root(rt)[0]


def test_checkpoints_every_n_entries_to_db_file_and_witness(make_settings) -> None:
    received: list[str] = []

    async def witness(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        received.append(body.decode())
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    server = LiveServer(witness, free_socket()).start()
    settings = make_settings(
        checkpoint_every=5, checkpoint_interval=0, checkpoint_witness_url=server.url + "/add"
    )
    rt = build_runtime(settings, plugins=[], upgrade=True)
    handle = start_checkpointing(rt)
    try:
        append(rt, 12)
        handle.flush()
        with Session(rt.engine) as session:
            rows = session.exec(select(CheckpointRow).order_by(CheckpointRow.id)).all()
        assert [r.tree_size for r in rows] == [5, 10]
        notes = split_notes(settings.checkpoints_file.read_text())
        assert notes == [r.note for r in rows] == received
        assert stat.S_IMODE(os.stat(settings.checkpoints_file).st_mode) == 0o600
        verifiers = rt.signing_keys().verifiers()
        for note in notes:
            cp = Checkpoint.parse(open_note(note, verifiers)[0])
            with Session(rt.engine) as session:
                assert cp.root_hash == root_at(session, cp.tree_size)
        # a quiet period: nothing appended, the next checkpoint has the same size and root
        quiet = sign_checkpoint(rt)
        again = sign_checkpoint(rt)
        assert (
            (quiet.tree_size, quiet.root_hash)
            == (again.tree_size, again.root_hash)
            == (12, reference_root(rt)[0].hex())
        )
    finally:
        handle.stop()
        server.stop()
        rt.close()


@pytest.fixture
def api(rt: Runtime):
    server = LiveServer(create_app(rt), free_socket()).start()
    _, key = create_api_key(rt.engine, role="auditor")
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"})
    yield client
    client.close()
    server.stop()


def test_checkpoint_proofs_and_public_key_over_http(rt: Runtime, api: httpx.Client) -> None:
    assert api.get("/v1/audit/checkpoint").status_code == 404
    append(rt, 19)
    sign_checkpoint(rt)
    cp = api.get("/v1/audit/checkpoint").json()
    assert cp["tree_size"] == 19
    note = api.get("/v1/audit/checkpoint", params={"format": "note"})
    assert note.headers["content-type"].startswith("text/plain") and note.text == cp["note"]
    keys = api.get("/v1/audit/public-key").json()
    assert keys["active_key_id"] == cp["key_id"] and keys["origin"] == cp["origin"]
    key_file = api.get("/v1/audit/public-key", params={"format": "text"}).text
    assert key_file == keys["keys"][0]["vkey"] + "\n"
    root = bytes.fromhex(cp["root_hash"])
    for seq in (1, 7, 19):
        proof = api.get("/v1/audit/proof/inclusion", params={"seq": seq, "size": 19}).json()
        entry = next(e for e in iter_entries(rt.engine) if e.seq == seq)
        assert proof["leaf_hash"] == leaf_hash(entry.canonical()).hex()
        path = [bytes.fromhex(h) for h in proof["proof"]]
        assert verify_inclusion(leaf_hash(entry.canonical()), seq - 1, 19, path, root)
    append(rt, 6, start=19)
    c = api.get("/v1/audit/proof/consistency", params={"from": 19}).json()
    assert c["to"] == 25 and c["from_root"] == cp["root_hash"]
    path = [bytes.fromhex(h) for h in c["proof"]]
    assert verify_consistency(19, 25, root, bytes.fromhex(c["to_root"]), path)
    bad = api.get("/v1/audit/proof/inclusion", params={"seq": 30})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    assert api.get("/v1/audit/proof/consistency", params={"from": 26}).status_code == 422


@pytest.fixture
def env(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("BROKER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BROKER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BROKER_DATABASE_URL", database_url)
    assert main(["db", "upgrade"]) == 0
    return Settings()


def test_export_and_verify_export_from_the_cli(env: Settings, tmp_path: Path, capsys) -> None:
    rt = build_runtime(env, plugins=[])
    append(rt, 30)
    assert main(["audit", "checkpoint"]) == 0
    append(rt, 3, start=30)
    export, keys = str(tmp_path / "log.jsonl"), tmp_path / "keys.txt"
    assert main(["audit", "public-key"]) == 0
    assert main(["audit", "export-log", "-o", export]) == 0
    keys.write_text(capsys.readouterr().out.splitlines()[-2] + "\n")
    assert main(["audit", "verify-export", export, "--public-key", str(keys)]) == 0
    assert "export verified: 33 entries, 30 covered by 1 signed checkpoint(s)" in (
        capsys.readouterr().out
    )
    # someone with the database edits entry 12 and recomputes nothing
    with rt.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET purpose = 'resold' WHERE seq = 12"))
    assert main(["audit", "export-log", "-o", export]) == 0
    assert main(["audit", "verify-export", export, "--public-key", str(keys), "--json"]) == 1
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{") :])
    assert (report["problem"], report["first_bad_seq"]) == ("modified", 12)
    # ...or cuts the log short
    with rt.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET purpose = NULL WHERE seq = 12"))
        conn.execute(text("DELETE FROM audit_log WHERE seq > 25"))
    assert main(["audit", "export-log", "-o", export]) == 0
    assert main(["audit", "verify-export", export, "--public-key", str(keys)]) == 1
    assert "export FAILED at seq 26: truncated" in capsys.readouterr().out
    rt.close()


def test_signing_key_rotation(env: Settings, tmp_path: Path, capsys) -> None:
    rt = build_runtime(env, plugins=[])
    append(rt, 8)
    ring = json.loads(env.resolved_signing_keys_file.read_text())
    old_private = next(k["private"] for k in ring["keys"] if k["kid"] == ring["active"])
    assert main(["keys", "rotate", "--signing"]) == 0
    out = capsys.readouterr().out
    assert "new checkpoint signing key" in out and "is retired" in out
    rotated = json.loads(env.resolved_signing_keys_file.read_text())
    assert [k for k in rotated["keys"] if k.get("private")] == [
        k for k in rotated["keys"] if k["kid"] == rotated["active"]
    ]
    event = list(iter_entries(rt.engine))[-1]
    assert event.event == "key.rotated" and event.details["key"] == "checkpoint-signing"
    append(rt, 2, start=8)
    assert main(["audit", "checkpoint"]) == 0  # the running broker signs with the new key
    export, keys = str(tmp_path / "log.jsonl"), tmp_path / "keys.txt"
    capsys.readouterr()
    assert main(["audit", "public-key"]) == 0
    keys.write_text(capsys.readouterr().out)
    assert "retired=" in keys.read_text()
    assert main(["audit", "export-log", "-o", export]) == 0
    assert main(["audit", "verify-export", export, "--public-key", str(keys)]) == 0
    capsys.readouterr()
    # the rotated-out key (stolen, say) signs after its retirement: refused
    import base64

    stolen = NoteSigner(
        rotated["name"], Ed25519PrivateKey.from_private_bytes(base64.b64decode(old_private))
    )
    with Session(rt.engine) as session:
        cp = Checkpoint(rotated["name"], 11, root_at(session, 11), "2999-01-01T00:00:00Z")
    with open(export + ".checkpoints", "a") as fh:
        fh.write(sign_note(cp.text(), [stolen]) + "\n")
    assert main(["audit", "verify-export", export, "--public-key", str(keys)]) == 1
    assert "untrusted_checkpoint" in capsys.readouterr().out
    rt.close()


def test_migration_builds_the_tree_of_an_existing_log(database_url: str, tmp_path: Path) -> None:
    engine = create_db_engine(database_url)
    upgrade_schema(engine, "0002")
    prev, rows = GENESIS_HASH, []
    for i in range(1, 12):
        e = seal({"seq": i, "time": "2026-01-01T00:00:00.000000Z", "event": "token.refreshed",
                  "actor": "broker", "details": {"i": i}}, prev)  # fmt: skip
        prev = e.hash
        rows.append(e.to_dict())
    with engine.begin() as conn:
        for r in rows:
            conn.execute(
                text(
                    "INSERT INTO audit_log (seq, time, event, actor, categories, field_paths,"
                    " details, prev_hash, hash) VALUES (:seq, :time, :event, :actor, '[]', '[]',"
                    " :details, :prev_hash, :hash)"
                ),
                {**r, "details": json.dumps(r["details"])},
            )
        conn.execute(text("UPDATE audit_head SET seq = 11, hash = :h WHERE id = 1"), {"h": prev})
    upgrade_schema(engine)
    engine.dispose()
    rt = build_runtime(Settings(home=tmp_path / "h", database_url=database_url), plugins=[])
    append(rt, 2, start=12)
    with Session(rt.engine) as session:  # 11, the log.format handover (migration 0015), 2
        assert root_at(session, 14) == reference_root(rt)[0]
        assert root_at(session, 11) != root_at(session, 14)
    rt.close()


def test_audit_verify_checks_the_signed_checkpoints(rt: Runtime) -> None:
    from broker.core.audit_chain import ChainHead, compute_hash, write_head
    from broker.flows.audit import verify_log
    from broker.store.audit import flush_head_files

    append(rt, 10)
    sign_checkpoint(rt)
    append(rt, 2, start=10)
    assert verify_log(rt).ok
    # someone with the database and the head file edits entry 4 and recomputes the chain
    prev = None
    with rt.engine.begin() as conn:
        for entry in list(iter_entries(rt.engine)):
            content = entry.content()
            if entry.seq == 4:
                content["purpose"] = "resold"
            prev = prev or entry.prev_hash
            new = compute_hash(content, prev)
            conn.execute(
                text(
                    "UPDATE audit_log SET purpose = :p, prev_hash = :ph, hash = :h WHERE seq = :s"
                ),
                {"p": content["purpose"], "ph": prev, "h": new, "s": entry.seq},
            )
            prev = new
        conn.execute(text("UPDATE audit_head SET hash = :h WHERE id = 1"), {"h": prev})
    flush_head_files()
    write_head(rt.settings.audit_head_file, ChainHead(12, prev))
    result = verify_log(rt)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, "modified", 1)
    assert "signed checkpoint of size 10" in result.message
