"""Signed session cookies: what they accept and what they refuse."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from broker.web.sessions import SessionSigner

NOW = 1_800_000_000


@pytest.fixture
def signer() -> SessionSigner:
    return SessionSigner(b"k" * 32)


def test_round_trip(signer: SessionSigner) -> None:
    value, issued = signer.issue("user", "user-1", now=NOW, ttl=60)
    read = signer.read(value, kind="user", now=NOW + 59)
    assert read == issued
    assert read.subject == "user-1" and read.expires_at == NOW + 60
    assert len(read.csrf) >= 32
    other, _ = signer.issue("user", "user-1", now=NOW, ttl=60)
    assert signer.read(other, kind="user", now=NOW).csrf != read.csrf


def test_expired_wrong_kind_and_other_key_are_refused(signer: SessionSigner) -> None:
    value, _ = signer.issue("user", "user-1", now=NOW, ttl=60)
    assert signer.read(value, kind="user", now=NOW + 60) is None
    assert signer.read(value, kind="auditor", now=NOW) is None
    assert SessionSigner(b"x" * 32).read(value, kind="user", now=NOW) is None


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda v: v.replace("v1.", "v2.", 1),
        lambda v: v + "x",
        lambda v: v[:-1],
        lambda v: ".".join(v.split(".")[:2]),
        lambda v: (
            "v1."
            + _b64({"k": "user", "s": "admin", "c": "c", "i": NOW, "e": NOW + 9e9})
            + "."
            + v.split(".")[2]
        ),
        lambda v: "",
        lambda v: "v1.!!.!!",
    ],
)
def test_tampering_is_refused(signer: SessionSigner, mangle) -> None:
    value, _ = signer.issue("user", "user-1", now=NOW, ttl=60)
    assert signer.read(mangle(value), kind="user", now=NOW) is None


def test_a_validly_signed_but_malformed_payload_is_refused(signer: SessionSigner) -> None:
    payload = _b64({"k": "user"})
    forged = f"v1.{payload}.{signer._mac(payload)}"
    assert signer.read(forged, kind="user", now=NOW) is None


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "session.key"
    first, made = SessionSigner.load_or_create(path)
    assert made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, made_again = SessionSigner.load_or_create(path)
    assert not made_again
    value, _ = first.issue("auditor", "key_1", now=NOW, ttl=60)
    assert again.read(value, kind="auditor", now=NOW) is not None


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        SessionSigner(b"short")
