"""A user's objections to uses of their data (GDPR Art. 21(2)-(3)): the promotional opt-out.

A user objects (from ``/me``, or the host through ``PUT /v1/users/{id}/preferences``)
to data-use keys: ``marketing`` (fideslang's every ``marketing.*`` use) and any key the
operator lists in ``BROKER_OBJECTABLE_USES``, each covering the keys below it. The
gateway (:func:`broker.core.gateway.decide`) then refuses those uses for that user on
every connection (``user objected``). The stored set is replaced as a whole; each key
added is in a ``preference.objected`` event, each key removed in a
``preference.withdrawn`` one (``details.uses``; ``details.object_to``: the set after),
written in the transaction that stores the set. An objection stays in force if the
operator later narrows ``BROKER_OBJECTABLE_USES``.

An objection also cancels, in the same transaction, the user's queued transfers (pending,
held by no worker) that carry a category declared for a use it covers (Art. 21(3): no
further processing for it); one a worker is already sending is not stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.core.errors import InvalidInput
from broker.core.policy import data_uses, is_data_use
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.models import UserPreference
from broker.store.preferences import queued_transfers

__all__ = [
    "MAX_OBJECTIONS",
    "Preferences",
    "covered_by",
    "objectable",
    "parse_preferences",
    "read_preferences",
    "set_objections",
]

MAX_OBJECTIONS = 50
_PREFS = UserPreference.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Preferences:
    user_id: str
    object_to: tuple[str, ...]
    objectable: tuple[str, ...]
    updated_at: datetime | None

    @property
    def choices(self) -> list[tuple[str, str, bool]]:
        """``(use, name, objected)`` for each use a page offers: the objectable ones
        and any narrower one the user objected to (through the API)."""
        names = data_uses()
        keys = dict.fromkeys([*self.objectable, *self.object_to])
        return [(k, names.get(k, k), k in self.object_to) for k in keys]

    def to_dict(self) -> dict[str, Any]:
        names = data_uses()
        return {
            "user_id": self.user_id,
            "object_to": list(self.object_to),
            "objectable": [{"use": k, "name": names.get(k, k)} for k in self.objectable],
            "updated_at": self.updated_at,
        }


def covered_by(use: str, keys: Iterable[str]) -> str | None:
    """The key in ``keys`` that covers ``use`` (itself or a parent), or None."""
    return next((k for k in keys if use == k or use.startswith(k + ".")), None)


def objectable(rt: Runtime) -> tuple[str, ...]:
    """The data uses a user may object to here."""
    return rt.settings.objectable_use_keys


def parse_preferences(rt: Runtime, body: Any) -> tuple[str, ...]:
    """``{"object_to": [use, ...]}``: known data-use keys a user may object to here."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    unknown = sorted(set(body) - {"object_to"})
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}", details={"fields": unknown})
    keys = body.get("object_to")
    if (
        not isinstance(keys, list)
        or len(keys) > MAX_OBJECTIONS
        or not all(isinstance(k, str) for k in keys)
    ):
        raise InvalidInput(
            f"object_to is required: a list of at most {MAX_OBJECTIONS} data-use keys",
            details={"field": "object_to"},
        )
    allowed = objectable(rt)
    refused = sorted({k for k in keys if not is_data_use(k) or covered_by(k, allowed) is None})
    if refused:
        raise InvalidInput(
            "object_to names uses that cannot be objected to here: " + ", ".join(refused),
            details={"field": "object_to", "refused": refused, "objectable": list(allowed)},
        )
    return tuple(sorted(set(keys)))


def read_preferences(rt: Runtime, user_id: str) -> Preferences:
    with Session(rt.engine) as session:
        row = session.get(UserPreference, user_id)
    return Preferences(
        user_id=user_id,
        object_to=tuple(row.object_to) if row else (),
        objectable=objectable(rt),
        updated_at=row.updated_at if row else None,
    )


def set_objections(
    rt: Runtime, user_id: str, object_to: Iterable[str], *, actor: str
) -> Preferences:
    """Store ``object_to`` as the user's objections; audit what was added and withdrawn,
    and cancel queued transfers the objection covers. ``user_id`` is valid already (the
    API checks it; ``/me`` has it from its session)."""
    wanted = sorted(set(object_to))
    try:
        stored, cancelled = _store(rt, user_id, wanted, actor=actor)
    except IntegrityError:  # a concurrent first write for this user: read it and go again
        stored, cancelled = _store(rt, user_id, wanted, actor=actor)
    for transfer_id in cancelled:
        rt.signal_outcome(transfer_id)
    return stored


def _covered_queue(session: Session, rt: Runtime, user_id: str, keys: list[str]) -> list[str]:
    """Ids of the user's queued transfers carrying a category declared for a use in ``keys``."""
    covered = []
    for transfer_id, connector_id, categories in queued_transfers(session, user_id=user_id):
        connector = rt.registry.connectors.get(connector_id)
        declared = connector.manifest.data if connector else ()
        if any(covered_by(d.use, keys) for d in declared if d.category in categories):
            covered.append(transfer_id)
    return covered


def _store(
    rt: Runtime, user_id: str, wanted: list[str], *, actor: str
) -> tuple[Preferences, list[str]]:
    from broker.flows.cancel import cancel_in  # cancel -> share -> here: import at use

    cancelled: list[str] = []
    now = rt.clock()
    with session_scope(rt.engine) as session:
        row = session.get(UserPreference, user_id, with_for_update=True)
        before = set(row.object_to) if row else set()
        added = [k for k in wanted if k not in before]
        withdrawn = sorted(before - set(wanted))
        if added or withdrawn:
            if row is None:
                row = UserPreference(user_id=user_id, object_to=wanted, updated_at=now)
            else:
                row.object_to, row.updated_at = wanted, now
            session.add(row)
            session.flush()
        for event, outcome, uses in (
            ("preference.objected", "objected", added),
            ("preference.withdrawn", "withdrawn", withdrawn),
        ):
            if uses:
                append_event(
                    session,
                    head_file=rt.settings.audit_head_file,
                    time=now,
                    event=event,
                    actor=actor,
                    user_id=user_id,
                    outcome=outcome,
                    details={"uses": uses, "object_to": wanted},
                )
        if added:
            reason = "the user objected to " + ", ".join(added) + "; nothing was sent"
            for transfer_id in _covered_queue(session, rt, user_id, added):
                if cancel_in(session, rt, transfer_id, actor=actor, reason=reason)[1]:
                    cancelled.append(transfer_id)
    stored = Preferences(
        user_id=user_id,
        object_to=tuple(wanted),
        objectable=objectable(rt),
        updated_at=row.updated_at if row is not None else None,
    )
    return stored, cancelled
