"""The token vault: OAuth tokens sealed with AES-256-GCM.

Sealed form: ``v1.<key id>.<base64url(nonce || ciphertext || tag)>``. The
associated data binds each ciphertext to its connection and token kind
(``broker-token/v1|<connection id>|<kind>``), so a ciphertext copied onto
another connection, or an access token swapped for a refresh token, fails to
open. Keys live in a key ring file (mode 0600) with one active key for new
seals and older keys kept for opening until ``broker keys rotate`` has
re-sealed everything.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.core.errors import ConfigurationError, VaultError
from broker.core.private_files import write_private

__all__ = ["KeyRing", "TokenVault"]

_PREFIX = "v1"
_NONCE = 12


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class KeyRing:
    """Token-encryption keys by id; ``active`` seals, all of them open."""

    active: str
    keys: dict[str, bytes] = field(default_factory=dict, repr=False)  # never in logs
    created: dict[str, str] = field(default_factory=dict)

    @classmethod
    def generate(cls) -> KeyRing:
        ring = cls(active="")
        ring.add_new_key()
        return ring

    def add_new_key(self) -> str:
        kid = "k" + secrets.token_hex(4)
        self.keys[kid] = AESGCM.generate_key(bit_length=256)
        self.created[kid] = datetime.now(UTC).isoformat(timespec="seconds")
        self.active = kid
        return kid

    def retire(self, kid: str) -> None:
        if kid == self.active:
            raise ConfigurationError("the active key cannot be retired")
        self.keys.pop(kid, None)
        self.created.pop(kid, None)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "active": self.active,
                "keys": [
                    {"kid": kid, "key": _b64e(key), "created_at": self.created.get(kid)}
                    for kid, key in self.keys.items()
                ],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, *, source: str = "key file") -> KeyRing:
        try:
            data = json.loads(text)
            if not isinstance(data["active"], str):
                raise TypeError("active must be a key id")
            ring = cls(active=data["active"])
            for item in data["keys"]:
                key = _b64d(item["key"])
                if len(key) != 32:
                    raise ValueError(f"key {item['kid']} is not 256 bits")
                ring.keys[item["kid"]] = key
                ring.created[item["kid"]] = item.get("created_at")
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"{source} is not a valid key ring: {exc}") from None
        if ring.active not in ring.keys:
            raise ConfigurationError(f"{source}: active key {ring.active!r} is missing")
        return ring

    def save(self, path: Path) -> None:
        """Write atomically with mode 0600 (the file never exists world-readable)."""
        write_private(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigurationError(f"{path} is not a valid key ring: not UTF-8 text") from None
        return cls.from_json(text, source=str(path))

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[KeyRing, bool]:
        """The ring at ``path``, creating it first when absent; says whether it did."""
        if path.exists():
            return cls.load(path), False
        ring = cls.generate()
        ring.save(path)
        return ring, True


class TokenVault:
    """Seals with the ring's active key; opens with any key in the ring.

    Given the key file's ``path``, a ciphertext under an unknown key id makes
    it reload the ring once (another process may have rotated) and adopt
    the file's active key.
    """

    def __init__(self, ring: KeyRing, *, path: Path | None = None) -> None:
        self.ring = ring
        self.path = path

    @staticmethod
    def _aad(connection_id: str, kind: str) -> bytes:
        return f"broker-token/v1|{connection_id}|{kind}".encode()

    def seal(self, plaintext: str, *, connection_id: str, kind: str) -> str:
        kid = self.ring.active
        nonce = os.urandom(_NONCE)
        ct = AESGCM(self.ring.keys[kid]).encrypt(
            nonce, plaintext.encode(), self._aad(connection_id, kind)
        )
        return f"{_PREFIX}.{kid}.{_b64e(nonce + ct)}"

    @staticmethod
    def key_id(sealed: str) -> str:
        parts = sealed.split(".")
        if len(parts) != 3 or parts[0] != _PREFIX:
            raise VaultError("ciphertext is not in the vault's format")
        return parts[1]

    def open(self, sealed: str, *, connection_id: str, kind: str) -> str:
        kid = self.key_id(sealed)
        key = self.ring.keys.get(kid)
        if key is None and self.path is not None and self.path.exists():
            self.ring = KeyRing.load(self.path)
            key = self.ring.keys.get(kid)
        if key is None:
            raise VaultError(
                f"ciphertext was sealed with unknown key {kid!r}", details={"key_id": kid}
            )
        try:
            raw = _b64d(sealed.split(".")[2])
            plaintext = AESGCM(key).decrypt(
                raw[:_NONCE], raw[_NONCE:], self._aad(connection_id, kind)
            )
        except (InvalidTag, ValueError):
            raise VaultError(
                "ciphertext failed authentication (tampered, or bound to another connection)",
                details={"key_id": kid},
            ) from None
        return plaintext.decode()

    def reseal(self, sealed: str, *, connection_id: str, kind: str) -> str:
        """Open with whatever key sealed it, seal again with the active key."""
        return self.seal(
            self.open(sealed, connection_id=connection_id, kind=kind),
            connection_id=connection_id,
            kind=kind,
        )
