"""Legal disclosures: data handed over because the law requires it, with no consent.

The privacy policy allows a disclosure without the user's consent when the law requires
it (a court order, a regulator's request). The broker does not send such data itself; it
records that it was disclosed, so that every report accounts for it. Each one is a
``disclosure.legal`` audit event: ``user_id``, ``categories``, ``field_paths``,
``purpose``, ``legal_basis`` (a GDPR Art. 6(1) basis other than consent), no
``consent_id``; ``details``: ``recipient``, ``reference`` (the order or request),
``use`` (``third_party_sharing.legal_obligation``), ``flagged: true``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.core.errors import InvalidInput
from broker.flows.connect import validate_user_id
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.db import session_scope

__all__ = ["LEGAL_BASES", "LEGAL_USE", "DisclosureRequest", "record_disclosure"]

LEGAL_BASES = ("legal_obligation", "vital_interests", "public_task", "legitimate_interests")
"""GDPR Art. 6(1)(c), (d), (e) and (f): the bases a disclosure without consent can rest on."""
LEGAL_USE = "third_party_sharing.legal_obligation"


def _text(body: dict[str, Any], name: str, *, required: bool = True, limit: int = 500) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value.strip()) <= limit:
        raise InvalidInput(
            f"{name} must be a string of 1-{limit} characters", details={"field": name}
        )
    return value.strip()


@dataclass(frozen=True)
class DisclosureRequest:
    user_id: str
    recipient: str
    categories: tuple[str, ...]
    legal_basis: str
    reference: str
    purpose: str | None = None
    field_paths: tuple[str, ...] = ()

    @classmethod
    def parse(cls, body: Any) -> DisclosureRequest:
        if not isinstance(body, dict):
            raise InvalidInput("the request body must be a JSON object")
        known = {
            "user_id",
            "recipient",
            "categories",
            "legal_basis",
            "reference",
            "purpose",
            "field_paths",
        }
        unknown = sorted(set(body) - known)
        if unknown:
            raise InvalidInput(
                f"unknown field(s): {', '.join(unknown)}", details={"fields": unknown}
            )
        lists = {}
        for name in ("categories", "field_paths"):
            value = body.get(name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise InvalidInput(f"{name} must be a list of strings", details={"field": name})
            lists[name] = tuple(value)
        return cls(
            user_id=validate_user_id(body.get("user_id")),
            recipient=_text(body, "recipient", limit=200),
            categories=lists["categories"],
            legal_basis=_text(body, "legal_basis", limit=40),
            reference=_text(body, "reference", limit=200),
            purpose=_text(body, "purpose", required=False),
            field_paths=lists["field_paths"],
        )


def record_disclosure(rt: Runtime, request: DisclosureRequest, *, actor: str) -> dict[str, Any]:
    """Check and log one legal disclosure; returns its audit entry."""
    if request.legal_basis not in LEGAL_BASES:
        raise InvalidInput(
            f"legal_basis must be one of {', '.join(LEGAL_BASES)} (consent needs a connection)",
            details={"field": "legal_basis", "allowed": list(LEGAL_BASES)},
        )
    if not request.categories:
        raise InvalidInput(
            "categories must name at least one category", details={"field": "categories"}
        )
    unknown = [c for c in request.categories if c not in rt.catalog]
    if unknown:
        raise InvalidInput(
            f"not in the catalog: {', '.join(unknown)}",
            details={"field": "categories", "unknown": unknown},
        )
    with session_scope(rt.engine) as session:
        entry = append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=rt.clock(),
            event="disclosure.legal",
            actor=actor,
            user_id=request.user_id,
            categories=list(request.categories),
            field_paths=list(request.field_paths),
            purpose=request.purpose or f"Disclosure required by law ({request.reference})",
            legal_basis=request.legal_basis,
            outcome="disclosed",
            details={
                "recipient": request.recipient,
                "reference": request.reference,
                "use": LEGAL_USE,
                "flagged": True,
            },
        )
    return entry.to_dict()
