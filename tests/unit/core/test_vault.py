"""The token vault: AES-256-GCM sealing, bindings, tamper detection, key ring and rotation."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.errors import ConfigurationError, VaultError
from broker.core.vault import KeyRing, TokenVault

TOKEN = "ya29.access-token-value-0123456789"
CONN = "conn_1"


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def vault() -> TokenVault:
    return TokenVault(KeyRing.generate())


# --- sealing and opening ------------------------------------------------------------


def test_round_trip(vault: TokenVault) -> None:
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="access")
    assert vault.open(sealed, connection_id=CONN, kind="access") == TOKEN


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_any_text(plaintext: str) -> None:
    vault = TokenVault(KeyRing.generate())
    sealed = vault.seal(plaintext, connection_id="c", kind="refresh")
    assert vault.open(sealed, connection_id="c", kind="refresh") == plaintext


def test_sealed_format_and_key_id(vault: TokenVault) -> None:
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="access")
    prefix, kid, body = sealed.split(".")
    assert prefix == "v1"
    assert kid == vault.ring.active
    assert TokenVault.key_id(sealed) == kid
    raw = b64d(body)
    # 12-byte nonce + ciphertext (same length as plaintext) + 16-byte GCM tag
    assert len(raw) == 12 + len(TOKEN.encode()) + 16


def test_ciphertext_does_not_contain_the_plaintext(vault: TokenVault) -> None:
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="access")
    assert TOKEN not in sealed
    assert TOKEN.encode() not in b64d(sealed.split(".")[2])
    assert b64e(TOKEN.encode())[:16] not in sealed


def test_each_seal_uses_a_fresh_nonce(vault: TokenVault) -> None:
    a = vault.seal(TOKEN, connection_id=CONN, kind="access")
    b = vault.seal(TOKEN, connection_id=CONN, kind="access")
    assert a != b
    assert b64d(a.split(".")[2])[:12] != b64d(b.split(".")[2])[:12]


@pytest.mark.parametrize("position", [0, 5, 12, 20, -1])
def test_flipped_byte_is_detected(vault: TokenVault, position: int) -> None:
    """Nonce, ciphertext and tag bytes are all covered by authentication."""
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="access")
    prefix, kid, body = sealed.split(".")
    raw = bytearray(b64d(body))
    raw[position] ^= 0x01
    tampered = f"{prefix}.{kid}.{b64e(bytes(raw))}"
    with pytest.raises(VaultError) as info:
        vault.open(tampered, connection_id=CONN, kind="access")
    assert "failed authentication" in str(info.value)
    assert info.value.details == {"key_id": kid}


def test_truncated_ciphertext_is_detected(vault: TokenVault) -> None:
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="access")
    prefix, kid, body = sealed.split(".")
    for raw in (b64d(body)[:-1], b64d(body)[:20], b64d(body)[:4], b""):
        with pytest.raises(VaultError):
            vault.open(f"{prefix}.{kid}.{b64e(raw)}", connection_id=CONN, kind="access")


def test_wrong_connection_id(vault: TokenVault) -> None:
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="access")
    with pytest.raises(VaultError):
        vault.open(sealed, connection_id="conn_2", kind="access")


def test_binding_is_not_ambiguous(vault: TokenVault) -> None:
    """'a|b' + 'c' must not open as 'a' + 'b|c' (a naive concatenation would)."""
    sealed = vault.seal(TOKEN, connection_id="a", kind="b")
    with pytest.raises(VaultError):
        vault.open(sealed, connection_id="ab", kind="")


def test_wrong_kind(vault: TokenVault) -> None:
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="access")
    with pytest.raises(VaultError):
        vault.open(sealed, connection_id=CONN, kind="refresh")


def test_unknown_key_id(vault: TokenVault) -> None:
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="access")
    other = TokenVault(KeyRing.generate())
    with pytest.raises(VaultError) as info:
        other.open(sealed, connection_id=CONN, kind="access")
    assert "unknown key" in str(info.value)
    assert info.value.details == {"key_id": TokenVault.key_id(sealed)}


def test_same_key_id_different_key_fails_authentication(vault: TokenVault) -> None:
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="access")
    impostor = KeyRing(active=vault.ring.active, keys={vault.ring.active: os.urandom(32)})
    with pytest.raises(VaultError):
        TokenVault(impostor).open(sealed, connection_id=CONN, kind="access")


@pytest.mark.parametrize(
    "sealed", ["", "garbage", "v2.k1.AAAA", "v1.k1", "v1.k1.AAAA.extra", "v1..", "v1.k1.!!!"]
)
def test_malformed_ciphertext(vault: TokenVault, sealed: str) -> None:
    with pytest.raises(VaultError):
        vault.open(sealed, connection_id=CONN, kind="access")


@pytest.mark.parametrize("body", ["", "a", "!!!", "AAAA", "====", "ab.cd"])
def test_malformed_body_under_a_known_key_id(vault: TokenVault, body: str) -> None:
    with pytest.raises(VaultError):
        vault.open(f"v1.{vault.ring.active}.{body}", connection_id=CONN, kind="access")


def test_error_messages_do_not_contain_plaintext_or_key(vault: TokenVault) -> None:
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="access")
    with pytest.raises(VaultError) as info:
        vault.open(sealed, connection_id="other", kind="access")
    text = repr(info.value.to_dict()) + str(info.value)
    assert TOKEN not in text
    key = vault.ring.keys[vault.ring.active]
    assert b64e(key) not in text


# --- rotation -----------------------------------------------------------------------


def test_rotation_keeps_old_ciphertexts_openable_and_reseal_moves_them() -> None:
    ring = KeyRing.generate()
    vault = TokenVault(ring)
    old_kid = ring.active
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="refresh")

    new_kid = ring.add_new_key()
    assert new_kid != old_kid
    assert ring.active == new_kid
    assert set(ring.keys) == {old_kid, new_kid}
    assert vault.open(sealed, connection_id=CONN, kind="refresh") == TOKEN

    fresh = vault.seal("new", connection_id=CONN, kind="access")
    assert TokenVault.key_id(fresh) == new_kid

    moved = vault.reseal(sealed, connection_id=CONN, kind="refresh")
    assert TokenVault.key_id(moved) == new_kid
    assert vault.open(moved, connection_id=CONN, kind="refresh") == TOKEN

    ring.retire(old_kid)
    assert old_kid not in ring.keys
    assert old_kid not in ring.created
    assert vault.open(moved, connection_id=CONN, kind="refresh") == TOKEN
    with pytest.raises(VaultError):
        vault.open(sealed, connection_id=CONN, kind="refresh")


def test_reseal_keeps_the_binding(vault: TokenVault) -> None:
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="access")
    vault.ring.add_new_key()
    moved = vault.reseal(sealed, connection_id=CONN, kind="access")
    with pytest.raises(VaultError):
        vault.open(moved, connection_id="other", kind="access")
    with pytest.raises(VaultError):
        vault.open(moved, connection_id=CONN, kind="refresh")


def test_reseal_refuses_a_tampered_ciphertext(vault: TokenVault) -> None:
    sealed = vault.seal(TOKEN, connection_id=CONN, kind="access")
    with pytest.raises(VaultError):
        vault.reseal(sealed, connection_id="other", kind="access")


def test_active_key_cannot_be_retired() -> None:
    ring = KeyRing.generate()
    with pytest.raises(ConfigurationError):
        ring.retire(ring.active)
    assert ring.active in ring.keys


def test_generated_keys_are_256_bit_and_distinct() -> None:
    ring = KeyRing.generate()
    ring.add_new_key()
    assert len(ring.keys) == 2
    assert all(len(k) == 32 for k in ring.keys.values())
    assert len(set(ring.keys.values())) == 2
    assert all(ring.created[kid] for kid in ring.keys)


# --- the key file -------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    ring = KeyRing.generate()
    ring.add_new_key()
    path = tmp_path / "keys.json"
    ring.save(path)
    loaded = KeyRing.load(path)
    assert loaded.active == ring.active
    assert loaded.keys == ring.keys
    assert loaded.created == ring.created
    sealed = TokenVault(ring).seal(TOKEN, connection_id=CONN, kind="access")
    assert TokenVault(loaded).open(sealed, connection_id=CONN, kind="access") == TOKEN


def test_key_file_mode_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keys.json"
    KeyRing.generate().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_mode_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "keys.json"
        KeyRing.generate().save(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_replaces_atomically_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.json"
    first = KeyRing.generate()
    first.save(path)
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        # at the moment of the swap the new file is complete and already private
        assert stat.S_IMODE(os.stat(src).st_mode) == 0o600
        assert json.loads(Path(src).read_text())["active"] == second.active
        assert KeyRing.load(path).active == first.active, "old file intact until the swap"
        replaced.append((str(src), str(dst)))
        real_replace(src, dst)

    second = KeyRing.generate()
    monkeypatch.setattr("broker.core.private_files.os.replace", spy)
    second.save(path)
    ((src, dst),) = replaced
    assert dst == str(path) and Path(src).parent == tmp_path and src != dst
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]
    assert KeyRing.load(path).active == second.active
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.json"
    first = KeyRing.generate()
    first.save(path)

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("broker.core.vault.os.fsync", fail)
    with pytest.raises(OSError):
        KeyRing.generate().save(path)
    assert KeyRing.load(path).keys == first.keys


def test_load_or_create_creates_once_then_loads(tmp_path: Path) -> None:
    path = tmp_path / "home" / "keys.json"
    ring, created = KeyRing.load_or_create(path)
    assert created is True
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = KeyRing.load_or_create(path)
    assert created_again is False
    assert again.active == ring.active
    assert again.keys == ring.keys


def test_load_or_create_does_not_overwrite_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    with pytest.raises(ConfigurationError):
        KeyRing.load_or_create(path)
    assert path.read_text() == "{not json"


def _valid_doc() -> dict[str, object]:
    return {"version": 1, "active": "k1", "keys": [{"kid": "k1", "key": b64e(b"\x01" * 32)}]}


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"[]",
        b"null",
        b'"a string"',
        b"\xff\xfe\x00binary garbage",
        b'{"keys": []}',
        b'{"active": "k1"}',
        b'{"active": "k1", "keys": null}',
        b'{"active": "k1", "keys": ["k1"]}',
        b'{"active": "k1", "keys": [{"kid": "k1"}]}',
        b'{"active": "k1", "keys": [{"kid": "k1", "key": "!!!not base64"}]}',
        b'{"active": "k1", "keys": [{"kid": "k1", "key": "AAAA"}]}',
        b'{"active": "k2", "keys": [{"kid": "k1", "key": "' + b64e(b"\x01" * 32).encode() + b'"}]}',
        b'{"active": [], "keys": []}',
        b'{"active": {}, "keys": []}',
    ],
)
def test_corrupt_key_file_is_a_configuration_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError) as info:
        KeyRing.load(path)
    assert str(path) in str(info.value)


def test_a_valid_handwritten_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(_valid_doc()))
    ring = KeyRing.load(path)
    assert ring.keys == {"k1": b"\x01" * 32}


def test_short_key_error_does_not_print_key_material(tmp_path: Path) -> None:
    doc = _valid_doc()
    doc["keys"] = [{"kid": "k1", "key": b64e(b"secretkeymaterial")}]
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigurationError) as info:
        KeyRing.load(path)
    assert b64e(b"secretkeymaterial") not in str(info.value)


# --- nothing leaks ------------------------------------------------------------------


def test_repr_and_str_never_include_keys() -> None:
    ring = KeyRing.generate()
    ring.add_new_key()
    vault = TokenVault(ring)
    texts = [repr(ring), str(ring), repr(vault), str(vault), f"{ring!r} {vault}"]
    for key in ring.keys.values():
        forms = [b64e(key), key.hex(), repr(key), base64.b64encode(key).decode()]
        for text in texts:
            for form in forms:
                assert form not in text
    assert ring.active in repr(ring)
