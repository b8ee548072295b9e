"""Resolve transfers whose worker stopped mid-run (an expired lease).

Workers do this themselves (:func:`broker.store.jobs.claim_lapsed`); this is the
operator's command for a broker with no worker running. It touches only
transfers whose lease has run out, never one a live worker holds (that worker
keeps its lease alive). Such a transfer may or may not have reached the third
party, so it is never marked delivered or failed: it is sent again under the
same ``Idempotency-Key`` when the manifest declares the third party idempotent
(it is given back to the queue), and otherwise ends ``outcome_unknown``.

A ``pending`` transfer from before the delivery engine (no schedule and no
lease) that is older than ``BROKER_RECONCILE_AFTER`` is treated the same way.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlmodel import Session

from broker.core.statuses import TransferStatus
from broker.flows.engine import LAPSED, finish
from broker.runtime import Runtime
from broker.store.db import session_scope
from broker.store.jobs import claim_lapsed, release
from broker.store.models import Transfer
from broker.store.transfers import lapsed_pending, mark_pre_engine, unleased_pending

__all__ = ["INTERRUPTED", "find_interrupted", "reconcile"]

INTERRUPTED = LAPSED


def _legacy(session: Session, rt: Runtime, older_than: int | None) -> list[Transfer]:
    age = rt.settings.reconcile_after if older_than is None else older_than
    cutoff = rt.clock() - timedelta(seconds=age)
    return unleased_pending(session, created_before=cutoff)


def find_interrupted(rt: Runtime, *, older_than: int | None = None) -> list[Transfer]:
    """Pending transfers whose lease ran out (or pre-engine ones past the age)."""
    now = rt.clock()
    with Session(rt.engine) as session:
        lapsed = lapsed_pending(session, now=now)
        return [*lapsed, *_legacy(session, rt, older_than)]


def reconcile(rt: Runtime, *, older_than: int | None = None) -> list[Transfer]:
    """Resolve interrupted transfers; returns them as they now stand."""
    owner = f"reconcile:{secrets.token_hex(4)}"
    now = rt.clock()
    with Session(rt.engine) as session:
        legacy = [t.id for t in _legacy(session, rt, older_than)]
    if legacy:  # give pre-engine rows a lapsed lease, so they go the same way
        with session_scope(rt.engine) as session:
            mark_pre_engine(session, transfer_ids=legacy, until=now - timedelta(seconds=1))
    resolved: list[Transfer] = []
    until = now + rt.lease_duration()
    while claims := claim_lapsed(rt.engine, owner=owner, now=now, until=until, limit=100):
        for claim in claims:
            with Session(rt.engine) as session:
                t = session.get(Transfer, claim.transfer_id)
            if t is None:
                continue
            try:
                idempotent = rt.registry.get(t.connector_id).manifest.delivery.idempotent
            except Exception:
                idempotent = False
            attempts = [*t.attempts, {"at": now.isoformat(), "error": LAPSED}]
            if idempotent and t.payload_sealed is not None:
                release(rt.engine, transfer_id=t.id, owner=owner, at=now, attempts=attempts)
                with Session(rt.engine) as session:
                    again = session.get(Transfer, t.id)
                resolved.append(again or t)
                continue
            stored, _ = finish(
                rt,
                t,
                owner=owner,
                status=TransferStatus.OUTCOME_UNKNOWN,
                attempts=attempts,
                reason=LAPSED,
                actor="broker:reconcile",
            )
            resolved.append(stored)
    return resolved
