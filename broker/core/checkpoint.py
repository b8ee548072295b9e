"""Signed checkpoints: C2SP ``tlog-checkpoint`` text in a C2SP ``signed-note``, Ed25519.

Checkpoint text (https://c2sp.org/tlog-checkpoint), one line each, every line ending in
a newline::

    broker.example/audit-log                        origin (also the key name)
    1532                                            tree size, decimal
    nnLmTGN2hUbLG0ZtYuVLpJtr9bRgMh4r6B7PfTxT5xo=    root hash, standard base64

Checkpoints carry no extension lines (tlog-checkpoint marks them NOT RECOMMENDED): when a
checkpoint existed is what witnesses' cosignature timestamps say (``broker.core.witness``).
Checkpoints signed before that end in ``time 2026-01-31T12:00:00Z``; they still parse.

A signed note (https://c2sp.org/signed-note) is that text, a blank line, then one line
per signature: ``— <key name> <base64(key id (4 bytes, big-endian) || signature)>``.
The Ed25519 signature covers the text including its final newline; the key id is
``SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]``. A verifier key is
shared as ``<key name>+<8 hex key id>+<base64(0x01 || public key)>`` (the "vkey").

Verification follows the note rules: signatures by keys the verifier does not know
are ignored; a known key whose signature fails rejects the note; a note with no
verified signature is rejected.

Checkpoint files (``BROKER_HOME/checkpoints``, exports) hold notes one after another,
each followed by one blank line.

The signing keys live in a JSON key ring (mode 0600, written atomically like the token
key ring): one active key that signs, and earlier keys kept with their public half and
``retired_at`` only, so checkpoints they signed stay verifiable and nothing new can be
signed with them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.core.errors import ConfigurationError, InvalidInput
from broker.core.private_files import write_private

__all__ = [
    "ED25519",
    "Checkpoint",
    "NoteSigner",
    "NoteVerifier",
    "SigningKeyRing",
    "key_id",
    "open_note",
    "sign_note",
    "split_notes",
]

ED25519 = 0x01
_DASH = "\u2014 "
_NAME = re.compile(r"[^\s+]+")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def _bad(message: str) -> InvalidInput:
    return InvalidInput(message, details={"problem": message})


def _public_bytes(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public: bytes) -> bytes:
    """``SHA-256(name || 0x0A || 0x01 || public)[:4]``."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public).digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    """A known public key: the name it signs as, its key id and the raw key."""

    name: str
    public: bytes
    not_after: str | None = None  # checkpoints signed later than this are refused

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    @property
    def vkey(self) -> str:
        encoded = base64.b64encode(bytes([ED25519]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, text: str, *, not_after: str | None = None) -> NoteVerifier:
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not _NAME.fullmatch(parts[0]):
            raise _bad(f"not a verifier key: {text.strip()[:80]!r}")
        try:
            raw = base64.b64decode(parts[2], validate=True)
            kid = bytes.fromhex(parts[1])
        except (binascii.Error, ValueError):
            raise _bad("verifier key is not valid base64/hex") from None
        if len(raw) != 33 or raw[0] != ED25519:
            raise _bad("verifier key is not an Ed25519 key")
        verifier = cls(parts[0], raw[1:], not_after)
        if verifier.key_id != kid:
            raise _bad("verifier key id does not match its name and key")
        return verifier

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, text)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class NoteSigner:
    name: str
    private: Ed25519PrivateKey = field(repr=False)

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, _public_bytes(self.private.public_key()))

    def signature_line(self, text: str) -> str:
        sig = self.verifier.key_id + self.private.sign(text.encode())
        return f"{_DASH}{self.name} {base64.b64encode(sig).decode()}\n"


def sign_note(text: str, signers: list[NoteSigner]) -> str:
    """The signed note: ``text`` (ending in a newline), a blank line, one line per signer."""
    if not text.endswith("\n") or "\n\n" in text:
        raise _bad("note text must end in a newline and have no empty line")
    return text + "\n" + "".join(s.signature_line(text) for s in signers)


def open_note(note: str, verifiers: list[NoteVerifier]) -> tuple[str, list[NoteVerifier]]:
    """Check ``note``; returns its text and the verifiers whose signature verified."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise _bad("note contains control characters")
    text, sep, sigs = note.rpartition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise _bad("note has no signature block")
    text += "\n"
    known = {(v.name, v.key_id): v for v in verifiers}
    good: list[NoteVerifier] = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(_DASH):
            raise _bad("malformed signature line")
        name, _, encoded = line[len(_DASH) :].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise _bad("signature is not base64") from None
        if len(raw) < 5:
            raise _bad("signature is too short")
        verifier = known.get((name, raw[:4]))
        if verifier is None:
            continue  # unknown keys are ignored
        if not verifier.verify(text.encode(), raw[4:]):
            raise _bad(f"the signature by {name}+{raw[:4].hex()} does not verify")
        good.append(verifier)
    if not good:
        raise _bad("no signature by a known key")
    return text, good


def split_notes(content: str) -> list[str]:
    """The notes of a checkpoint file: each note is followed by one blank line."""
    out, current = [], ""
    for block in content.split("\n\n"):
        if not block.strip():
            continue
        if not current:
            current = block + "\n\n"
        else:
            out.append(current + block.strip("\n") + "\n")
            current = ""
    if current:
        raise _bad("checkpoint file ends with an unsigned note")
    return out


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    time: str | None = None  # the legacy ``time`` line (UTC, seconds); new ones have none

    def text(self) -> str:
        root = base64.b64encode(self.root_hash).decode()
        extension = f"time {self.time}\n" if self.time else ""
        return f"{self.origin}\n{self.tree_size}\n{root}\n{extension}"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
            raise _bad("checkpoint text must be at least three non-empty lines")
        origin, size, root = lines[0], lines[1], lines[2]
        if not re.fullmatch(r"0|[1-9]\d{0,18}", size):
            raise _bad("checkpoint tree size is not a decimal number")
        try:
            digest = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise _bad("checkpoint root hash is not base64") from None
        if len(digest) != 32:
            raise _bad("checkpoint root hash is not 32 bytes")
        time = next((x[5:] for x in lines[3:-1] if x.startswith("time ")), None)
        if time is not None and not _TIME.fullmatch(time):
            raise _bad("checkpoint 'time' line is not a UTC time")
        return cls(origin, int(size), digest, time)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SigningKeyRing:
    """Checkpoint signing keys: ``active`` signs; retired keys keep their public half."""

    name: str
    active: str = ""
    private: dict[str, bytes] = field(default_factory=dict, repr=False)
    public: dict[str, bytes] = field(default_factory=dict)
    created: dict[str, str] = field(default_factory=dict)
    retired: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def kid(name: str, public: bytes) -> str:
        return key_id(name, public).hex()

    def add_new_key(self) -> str:
        """A new active key; the previous one is retired and its private half dropped."""
        private = Ed25519PrivateKey.generate()
        public = _public_bytes(private.public_key())
        kid = self.kid(self.name, public)
        now = _now()
        if self.active:
            self.retired[self.active] = now
            self.private.pop(self.active, None)
        self.private[kid] = private.private_bytes_raw()
        self.public[kid] = public
        self.created[kid] = now
        self.active = kid
        return kid

    def signer(self) -> NoteSigner:
        return NoteSigner(
            self.name, Ed25519PrivateKey.from_private_bytes(self.private[self.active])
        )

    def verifiers(self) -> list[NoteVerifier]:
        return [
            NoteVerifier(self.name, pub, self.retired.get(kid)) for kid, pub in self.public.items()
        ]

    def to_json(self) -> str:
        keys = []
        for kid, pub in self.public.items():
            item: dict[str, str | None] = {"kid": kid, "public": base64.b64encode(pub).decode()}
            if kid in self.private:
                item["private"] = base64.b64encode(self.private[kid]).decode()
            item["created_at"] = self.created.get(kid)
            item["retired_at"] = self.retired.get(kid)
            keys.append(item)
        return json.dumps(
            {"version": 1, "name": self.name, "active": self.active, "keys": keys}, indent=2
        )

    @classmethod
    def from_json(cls, text: str, *, source: str = "signing key file") -> SigningKeyRing:
        try:
            data = json.loads(text)
            ring = cls(name=str(data["name"]), active=str(data["active"]))
            for item in data["keys"]:
                kid = str(item["kid"])
                ring.public[kid] = base64.b64decode(item["public"], validate=True)
                if ring.kid(ring.name, ring.public[kid]) != kid:
                    raise ValueError(f"key {kid} does not match its public key")
                if item.get("private"):
                    ring.private[kid] = base64.b64decode(item["private"], validate=True)
                ring.created[kid] = item.get("created_at")
                if item.get("retired_at"):
                    ring.retired[kid] = item["retired_at"]
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ConfigurationError(f"{source} is not a valid signing key ring: {exc}") from None
        if ring.active not in ring.private:
            raise ConfigurationError(f"{source}: the active signing key {ring.active!r} is missing")
        return ring

    def save(self, path: Path) -> None:
        """Write atomically with mode 0600 (the file never exists world-readable)."""
        write_private(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> SigningKeyRing:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigurationError(f"{path} is not a valid signing key ring") from None
        return cls.from_json(text, source=str(path))

    @classmethod
    def load_or_create(cls, path: Path, name: str) -> tuple[SigningKeyRing, bool]:
        if path.exists():
            return cls.load(path), False
        ring = cls(name=name)
        ring.add_new_key()
        ring.save(path)
        return ring, True
