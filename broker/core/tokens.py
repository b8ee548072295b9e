"""Opaque bearer secrets: API keys, connect-session tokens, OAuth ``state``.

A secret is shown once and stored only as its SHA-256 digest, so a copy of
the database cannot be replayed. Lookups compare digests, never raw values.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["digest", "new_secret"]


def new_secret(prefix: str = "", nbytes: int = 32) -> str:
    """A URL-safe random secret with at least ``nbytes`` bytes of entropy."""
    return f"{prefix}{secrets.token_urlsafe(nbytes)}"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
