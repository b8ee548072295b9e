"""``broker keys rotate``: a new token-encryption key; every stored secret re-sealed
(OAuth tokens, open PKCE verifiers, webhook signing secrets, tenants' OAuth client
secrets).

The new key is saved to the key file (keeping the old ones) before any
ciphertext changes, so a crash at any point leaves every ciphertext openable.
Old keys stay in the file: a broker process started before the rotation
still seals with its old active key until it reloads the key file, which it
does by itself the first time it meets a key id it does not know.
"""

from __future__ import annotations

from typing import TypedDict

from sqlmodel import Session

from broker.flows.tenant_credentials import reseal_client_secrets
from broker.flows.webhooks import SECRET_KIND
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.tickets import open_attempts_with_verifier
from broker.store.tokens import all_tokens_for_update
from broker.store.webhook_endpoints import all_endpoints_for_update

__all__ = ["KeyRotation", "rotate_token_key"]


class KeyRotation(TypedDict):
    """What a rotation did: the new key id, the earlier ones, the secrets re-sealed."""

    new_key_id: str
    previous_key_ids: list[str]
    resealed: int
    resealed_webhook_endpoints: int
    resealed_client_secrets: int


def rotate_token_key(rt: Runtime, *, actor: str = "cli") -> KeyRotation:
    ring = rt.vault.ring
    old = sorted(ring.keys)
    new = ring.add_new_key()
    ring.save(rt.settings.resolved_keys_file)
    resealed = 0
    with session_scope(rt.engine) as session:
        for row in all_tokens_for_update(session):
            cid = row.connection_id
            row.access_token = rt.vault.reseal(
                row.access_token, connection_id=cid, kind="access_token"
            )
            if row.refresh_token:
                row.refresh_token = rt.vault.reseal(
                    row.refresh_token, connection_id=cid, kind="refresh_token"
                )
            row.key_id = new
            session.add(row)
            resealed += 1
        for attempt in open_attempts_with_verifier(session):
            if attempt.code_verifier is None:  # (the query's condition, for the type)
                continue
            attempt.code_verifier = rt.vault.reseal(
                attempt.code_verifier, connection_id=attempt.connection_id, kind="pkce_verifier"
            )
            session.add(attempt)
        endpoints = _reseal_webhook_secrets(rt, session)
        clients = reseal_client_secrets(rt, session)
        append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=rt.clock(),
            event="key.rotated",
            actor=actor,
            details={
                "new_key_id": new,
                "previous_key_ids": old,
                "resealed_connections": resealed,
                "resealed_webhook_endpoints": endpoints,
                "resealed_client_secrets": clients,
            },
        )
    return {
        "new_key_id": new,
        "previous_key_ids": old,
        "resealed": resealed,
        "resealed_webhook_endpoints": endpoints,
        "resealed_client_secrets": clients,
    }


def _reseal_webhook_secrets(rt: Runtime, session: Session) -> int:
    """The webhook endpoints' signing secrets (and a rotated-out one still valid)."""
    count = 0
    for row in all_endpoints_for_update(session):
        row.secret = rt.vault.reseal(row.secret, connection_id=row.id, kind=SECRET_KIND)
        if row.previous_secret:
            row.previous_secret = rt.vault.reseal(
                row.previous_secret, connection_id=row.id, kind=SECRET_KIND
            )
        session.add(row)
        count += 1
    return count
