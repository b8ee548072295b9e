"""Pseudonymous subjects and salted payload digests: log format 2 (crypto-shredding).

Pure code: no database, no web framework. From format 2 on, an audit entry names its
user by a *pseudonym* and commits to its payload by a *salted digest*, so the log can
stay append-only and verifiable while a user's personal data is erased (GDPR Art. 17):

- ``pseudonym(subject_key, user_id) = lowercase_hex(HMAC-SHA256(subject_key, UTF-8(user_id)))``
  with a random 32-byte ``subject_key`` per user, kept in the ``subject_keys`` table (never
  in the log). It goes where the clear id went: the entry's ``user_id`` and, for an actor
  ``user:<id>``, the actor (``user:<pseudonym>``). While the key exists the broker maps
  the pseudonym back; once it is destroyed nothing links the entries to the person.
- ``salted_digest(salt, body) = lowercase_hex(HMAC-SHA256(salt, body))`` with a random
  32-byte ``salt`` per transfer, kept on the transfer row (never in the log) and deleted
  on erasure: a small payload can no longer be confirmed by guessing it.

Both are 64 lowercase hex characters, like the SHA-256 values of format 1, so the entry
fields, their canonical encoding and the hash chain are unchanged. A log begun with
format 1 switches at a ``log.format`` entry (``handover_details``) that commits to the
format-1 log's final tree size and root; entries before it are never rewritten.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, MutableMapping
from typing import Any

from broker.core.errors import InvalidInput

__all__ = [
    "ERASED_EVENT",
    "ERASED_MARK",
    "FORMAT_EVENT",
    "LOG_FORMAT",
    "SALT_BYTES",
    "SUBJECT_KEY_BYTES",
    "USER_ACTOR",
    "handover_details",
    "is_pseudonym",
    "new_salt",
    "new_subject_key",
    "pseudonym",
    "pseudonymise",
    "salted_digest",
]

LOG_FORMAT = 2
FORMAT_EVENT = "log.format"
ERASED_EVENT = "subject.erased"
SUBJECT_KEY_BYTES = 32
SALT_BYTES = 32
USER_ACTOR = "user:"
ERASED_MARK = "~"
"""Rows of an erased user keep ``~<pseudonym>`` for their id (no valid user id starts with
``~``); an entry written about such a row names the bare pseudonym, and no key is made."""
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Entries whose user_id is a pseudonym already (the erasure names the erased subject).
_PRESET = frozenset({ERASED_EVENT, FORMAT_EVENT})


def new_subject_key() -> bytes:
    """A fresh random subject key (32 bytes)."""
    return secrets.token_bytes(SUBJECT_KEY_BYTES)


def new_salt() -> bytes:
    """A fresh random per-transfer salt (32 bytes)."""
    return secrets.token_bytes(SALT_BYTES)


def _key(value: bytes, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) < 16:
        raise InvalidInput(f"{name} must be at least 16 bytes", details={"field": name})
    return bytes(value)


def pseudonym(subject_key: bytes, user_id: str) -> str:
    """``hex(HMAC-SHA256(subject_key, user_id))``: how format-2 entries name the user."""
    if not isinstance(user_id, str) or not user_id:
        raise InvalidInput("user_id must be a non-empty string", details={"field": "user_id"})
    key = _key(subject_key, "subject_key")
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def salted_digest(salt: bytes, body: bytes) -> str:
    """``hex(HMAC-SHA256(salt, body))``: the payload digest of a format-2 transfer
    (``body``: the canonical payload bytes sent)."""
    return hmac.new(_key(salt, "salt"), bytes(body), hashlib.sha256).hexdigest()


def is_pseudonym(value: object) -> bool:
    """Whether ``value`` has the form of a pseudonym (64 lowercase hex characters)."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def pseudonymise(
    content: MutableMapping[str, Any], name: Callable[[str], str]
) -> MutableMapping[str, Any]:
    """Replace, in place, the clear user id of an entry's ``content`` by ``name(user_id)``:
    its ``user_id`` and a ``user:<id>`` actor. ``log.format`` and ``subject.erased``
    entries are left as they are (they carry no clear id). Returns ``content``."""
    if content.get("event") in _PRESET:
        return content
    user_id = content.get("user_id")
    if user_id is not None:
        content["user_id"] = _named(user_id, name)
    actor = content.get("actor")
    if isinstance(actor, str) and actor.startswith(USER_ACTOR) and len(actor) > len(USER_ACTOR):
        content["actor"] = USER_ACTOR + _named(actor[len(USER_ACTOR) :], name)
    return content


def _named(user_id: str, name: Callable[[str], str]) -> str:
    return user_id[len(ERASED_MARK) :] if user_id.startswith(ERASED_MARK) else name(user_id)


def handover_details(*, previous_size: int, previous_root: bytes) -> dict[str, Any]:
    """The ``details`` of the ``log.format`` entry starting format 2 after a format-1
    log of ``previous_size`` entries whose RFC 9162 tree root is ``previous_root``."""
    if isinstance(previous_size, bool) or not isinstance(previous_size, int) or previous_size < 0:
        raise InvalidInput("previous_size must be a non-negative integer")
    if len(previous_root) != 32:
        raise InvalidInput("previous_root must be a 32-byte hash")
    return {
        "format": LOG_FORMAT,
        "previous": {"format": 1, "size": previous_size, "root": previous_root.hex()},
        "pseudonyms": "HMAC-SHA256(subject_key, user_id)",
        "payload_digest": "HMAC-SHA256(transfer_salt, payload)",
    }
