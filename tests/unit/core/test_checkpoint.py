"""Checkpoints as C2SP signed notes: format, key ids, verification rules, key rotation."""

from __future__ import annotations

import base64
import hashlib
import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.core.checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    SigningKeyRing,
    key_id,
    open_note,
    sign_note,
    split_notes,
)
from broker.core.errors import ConfigurationError, InvalidInput

NAME = "broker.example/audit-log"
ROOT = hashlib.sha256(b"root").digest()


def signer(name: str = NAME) -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.generate())


def test_checkpoint_text_is_the_c2sp_body_with_a_time_extension_line() -> None:
    cp = Checkpoint(NAME, 1532, ROOT, "2026-01-31T12:00:00Z")
    text = cp.text()
    assert text == f"{NAME}\n1532\n{base64.b64encode(ROOT).decode()}\ntime 2026-01-31T12:00:00Z\n"
    assert Checkpoint.parse(text) == cp
    for bad in (f"{NAME}\n01\nxx\n", f"{NAME}\n5\n{base64.b64encode(b'short').decode()}\n", ""):
        with pytest.raises(InvalidInput):
            Checkpoint.parse(bad)


def test_key_id_and_vkey_follow_the_signed_note_spec() -> None:
    s = signer()
    public = s.verifier.public
    expected = hashlib.sha256(NAME.encode() + b"\n" + b"\x01" + public).digest()[:4]
    assert key_id(NAME, public) == expected == s.verifier.key_id
    vkey = s.verifier.vkey
    encoded = base64.b64encode(b"\x01" + public).decode()
    assert vkey == f"{NAME}+{expected.hex()}+{encoded}"
    assert NoteVerifier.from_vkey(vkey) == s.verifier
    with pytest.raises(InvalidInput):
        NoteVerifier.from_vkey(vkey.replace(expected.hex(), "00000000"))


def test_sign_and_open_a_note() -> None:
    s = signer()
    text = Checkpoint(NAME, 7, ROOT, "2026-01-31T12:00:00Z").text()
    note = sign_note(text, [s])
    body, sigline = note.split("\n\n")
    assert body + "\n" == text and sigline.startswith(f"\u2014 {NAME} ")
    raw = base64.b64decode(sigline.split(" ")[2])
    assert raw[:4] == s.verifier.key_id and len(raw) == 4 + 64
    opened, good = open_note(note, [s.verifier])
    assert opened == text and good == [s.verifier]


def test_unknown_keys_are_ignored_but_a_note_needs_one_known_signature() -> None:
    known, other = signer(), signer("witness.example/w1")
    text = Checkpoint(NAME, 7, ROOT, "2026-01-31T12:00:00Z").text()
    note = sign_note(text, [other, known])
    assert open_note(note, [known.verifier])[1] == [known.verifier]
    with pytest.raises(InvalidInput, match="no signature by a known key"):
        open_note(sign_note(text, [other]), [known.verifier])
    # same name, another key: unknown, so refused as unsigned
    with pytest.raises(InvalidInput, match="no signature by a known key"):
        open_note(sign_note(text, [signer()]), [known.verifier])


def test_a_known_key_whose_signature_fails_rejects_the_note() -> None:
    s = signer()
    note = sign_note(Checkpoint(NAME, 7, ROOT, "2026-01-31T12:00:00Z").text(), [s])
    with pytest.raises(InvalidInput, match="does not verify"):
        open_note(note.replace("\n7\n", "\n8\n"), [s.verifier])


def test_checkpoint_files_hold_notes_separated_by_blank_lines() -> None:
    s = signer()
    notes = [
        sign_note(Checkpoint(NAME, n, ROOT, "2026-01-31T12:00:00Z").text(), [s]) for n in (1, 2)
    ]
    assert split_notes("".join(n + "\n" for n in notes)) == notes
    with pytest.raises(InvalidInput):
        split_notes(notes[0] + "\n" + "origin\n3\n")


def test_signing_key_rotation_keeps_only_public_halves_of_retired_keys(tmp_path) -> None:
    path = tmp_path / "signing-keys.json"
    ring, made = SigningKeyRing.load_or_create(path, NAME)
    assert made and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = ring.active
    old_verifier = ring.verifiers()[0]
    note = sign_note(Checkpoint(NAME, 1, ROOT, "2026-01-31T12:00:00Z").text(), [ring.signer()])
    second = ring.add_new_key()
    ring.save(path)
    loaded = SigningKeyRing.load(path)
    assert loaded.active == second and first in loaded.retired
    assert first not in loaded.private and second in loaded.private
    assert '"private"' in path.read_text() and path.read_text().count('"private"') == 1
    retired = next(v for v in loaded.verifiers() if v.key_id == old_verifier.key_id)
    assert retired.not_after == loaded.retired[first]
    assert open_note(note, loaded.verifiers())[1][0].key_id.hex() == first
    assert SigningKeyRing.load_or_create(path, "ignored")[1] is False


def test_a_damaged_key_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "signing-keys.json"
    path.write_text('{"name": "x", "active": "k", "keys": []}')
    with pytest.raises(ConfigurationError, match="active signing key"):
        SigningKeyRing.load(path)
    path.write_text("not json")
    with pytest.raises(ConfigurationError):
        SigningKeyRing.load(path)


def test_append_private_adds_whole_lines_to_a_file_only_its_owner_reads(tmp_path) -> None:
    import os
    import stat

    from broker.core.private_files import append_private

    path = tmp_path / "checkpoints"
    append_private(path, "note one")
    append_private(path, "note two")
    assert path.read_text() == "note one\nnote two\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
