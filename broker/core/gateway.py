"""The transfer gateway: may this payload go to this third party, and what of it?

A pure decision over plain values; no database, no network. The flow that asks
(:mod:`broker.flows.share`) records whatever it answers. In order:

1. the connection must be ``active`` with a consent record, else refused
   (``connection_not_active``);
2. every payload field maps to a catalog category; a field outside the grant
   refuses the request in ``reject`` mode (``outside_grant``) and is dropped in
   ``drop`` mode; a payload with nothing left is refused;
3. a ``purpose`` the caller names must be one the manifest declares for the
   categories sent (``purpose_not_declared``);
4. no data use of those categories (or the one the caller names) may be
   forbidden by the operator's policy (``forbidden_use``), and a named use must be
   declared (``purpose_not_declared``);
5. no declared use of the categories sent (whatever use the caller names) may be
   one the user objected to (``user_objected``, GDPR Art. 21(2)-(3)): ``objections``
   are data-use keys, each covering the keys below it, read by the flow from the
   user's preferences. Refused in either mode.

The payload's canonical JSON and its SHA-256 are part of either answer: an
idempotent replay compares digests whatever the verdict.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from broker.core.catalog import Catalog
from broker.core.errors import (
    BrokerError,
    ConnectionNotActive,
    ForbiddenUse,
    InvalidInput,
    OutsideGrant,
    PurposeNotDeclared,
    UserObjected,
)
from broker.core.manifest import Manifest
from broker.core.policy import Policy, is_data_use
from broker.core.scope import canonical_payload, check_scope, drop_fields, payload_digest
from broker.core.statuses import ConnectionStatus

__all__ = [
    "MODES",
    "TERMS_CHANGED",
    "Allowed",
    "Refused",
    "TransferRequest",
    "decide",
]

#: why a connection paused by a significant change of its terms is (its ``last_error``),
#: and the reason its blocked transfers are recorded with
TERMS_CHANGED = "terms changed; re-consent required"

MODES = ("reject", "drop")
_FIELDS = frozenset({"action", "data", "purpose", "mode", "idempotency_key", "use"})


@dataclass(frozen=True)
class TransferRequest:
    action: str
    data: dict[str, Any]
    purpose: str | None = None
    mode: str = "reject"
    idempotency_key: str | None = None
    use: str | None = None  # a fideslang data-use key the caller says this transfer serves

    @classmethod
    def parse(cls, body: Any, *, idempotency_key: str | None = None) -> TransferRequest:
        """Validate a request body; ``idempotency_key`` is the ``Idempotency-Key`` header's."""
        if not isinstance(body, dict):
            raise InvalidInput("the request body must be a JSON object")
        unknown = set(body) - _FIELDS
        if unknown:
            raise InvalidInput(
                f"unknown field(s): {', '.join(sorted(unknown))}",
                details={"fields": sorted(unknown)},
            )
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise InvalidInput(
                "action is required and must be a string", details={"field": "action"}
            )
        data = body.get("data")
        if not isinstance(data, dict):
            raise InvalidInput(
                "data is required and must be a JSON object", details={"field": "data"}
            )
        purpose = body.get("purpose")
        if purpose is not None and (not isinstance(purpose, str) or not 0 < len(purpose) <= 500):
            raise InvalidInput(
                "purpose must be a string of 1-500 characters", details={"field": "purpose"}
            )
        mode = body.get("mode", "reject")
        if mode not in MODES:
            raise InvalidInput("mode must be 'reject' or 'drop'", details={"field": "mode"})
        key = body.get("idempotency_key")
        if key is not None and idempotency_key is not None and key != idempotency_key:
            raise InvalidInput(
                "the Idempotency-Key header and the body's idempotency_key differ",
                details={"field": "idempotency_key"},
            )
        key = idempotency_key if key is None else key
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200):
            raise InvalidInput(
                "idempotency_key must be a string of 1-200 characters",
                details={"field": "idempotency_key"},
            )
        use = body.get("use")
        if use is not None and (not isinstance(use, str) or not is_data_use(use)):
            raise InvalidInput("use must be a known data-use key", details={"field": "use"})
        return cls(
            action=action, data=data, purpose=purpose, mode=mode, idempotency_key=key, use=use
        )


@dataclass(frozen=True)
class Allowed:
    """Send ``data`` (``body`` is its canonical JSON) under ``purpose``."""

    data: dict[str, Any]
    body: bytes
    payload_sha256: str
    categories: tuple[str, ...]
    field_paths: tuple[str, ...]
    dropped: tuple[dict[str, Any], ...]
    purpose: str
    #: the data uses the manifest declares for the categories sent (kept on the
    #: transfer, so reports say what was declared then, not what is installed now)
    uses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refused:
    """Send nothing. ``record`` goes into the ``transfer.blocked`` event; ``details``
    into the error the caller gets (with the blocked transfer's id added)."""

    error: type[BrokerError]
    message: str
    reason: str
    payload_sha256: str
    categories: tuple[str, ...]
    field_paths: tuple[str, ...]
    dropped: tuple[dict[str, Any], ...] = ()
    record: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    #: the canonical payload it would have sent (an idempotent replay compares it)
    body: bytes = field(default=b"", repr=False)

    def exception(self, transfer_id: str) -> BrokerError:
        return self.error(self.message, details={"transfer_id": transfer_id, **self.details})


def decide(
    *,
    manifest: Manifest,
    catalog: Catalog,
    policy: Policy,
    connection_status: str,
    granted: Collection[str] | None,
    request: TransferRequest,
    objections: Collection[str] = (),
    paused_for: str | None = None,
) -> Allowed | Refused:
    """The verdict on one transfer request; ``granted`` is None without a consent record;
    ``objections``: the data uses the user objects to; ``paused_for``: why a paused
    connection is paused (``TERMS_CHANGED``: a significant change of the terms)."""
    scope = check_scope(catalog, request.data, set(granted or ()))
    data = request.data
    if scope.outside and request.mode == "drop":
        data = drop_fields(request.data, set(scope.field_paths))
    body = canonical_payload(data)
    digest = payload_digest(body)
    every_path = tuple(f.path for f in (*scope.allowed, *scope.outside))

    def refuse(error: type[BrokerError], message: str, reason: str, **kw: Any) -> Refused:
        return Refused(
            error=error,
            message=message,
            reason=reason,
            payload_sha256=digest,
            body=body,
            categories=kw.pop("categories", tuple(scope.categories)),
            field_paths=kw.pop("field_paths", tuple(scope.field_paths)),
            **kw,
        )

    if connection_status != ConnectionStatus.ACTIVE or granted is None:
        terms = (
            connection_status == ConnectionStatus.RECONSENT_REQUIRED and paused_for == TERMS_CHANGED
        )
        return refuse(
            ConnectionNotActive,
            f"the connection is {connection_status}"
            + (" (the third party's terms changed)" if terms else "")
            + "; nothing was sent",
            TERMS_CHANGED if terms else f"connection is {connection_status}",
            field_paths=every_path,
            record={"status": connection_status},
            details={"status": connection_status},
        )
    outside = [f.to_dict() for f in scope.outside]
    dropped = tuple(outside) if request.mode == "drop" else ()
    if scope.outside and request.mode == "reject":
        return refuse(
            OutsideGrant,
            "the payload has fields outside what the user granted; nothing was sent",
            "fields outside the grant",
            categories=tuple(
                sorted(set(scope.categories) | {f.category for f in scope.outside if f.category})
            ),
            field_paths=every_path,
            record={"outside": outside},
            details={"fields": outside},
        )
    if not scope.allowed:
        return refuse(
            OutsideGrant,
            "no field of the payload is within the grant; nothing was sent",
            "nothing within the grant",
            record={"dropped": outside},
            dropped=dropped,
            details={"fields": outside},
        )
    declared = {d.category: d.purpose for d in manifest.data if d.category in scope.categories}
    if request.purpose is not None and request.purpose not in declared.values():
        return refuse(
            PurposeNotDeclared,
            f"{manifest.name} does not declare that purpose for these categories",
            "purpose not declared",
            record={"purpose": request.purpose},
            dropped=dropped,
            details={"declared": sorted(set(declared.values()))},
        )
    uses = sorted({d.use for d in manifest.data if d.category in scope.categories})
    if forbidden := policy.forbidden_in([request.use] if request.use else uses):
        use, by = next(iter(forbidden.items()))
        return refuse(
            ForbiddenUse,
            f"the data-use policy forbids {use!r}; nothing was sent",
            "forbidden use",
            record={"use": use, "forbidden_by": by},
            dropped=dropped,
            details={"use": use, "forbidden_by": by},
        )
    if request.use is not None and request.use not in uses:
        return refuse(
            PurposeNotDeclared,
            f"{manifest.name} does not declare that use for these categories",
            "use not declared",
            record={"use": request.use},
            dropped=dropped,
            details={"declared_uses": uses},
        )
    # Every declared use of what is sent, whatever use the caller names: the objection wins.
    if objected := _objected(objections, uses):
        use, by = objected
        return refuse(
            UserObjected,
            f"the user objected to the use {use!r}; nothing was sent",
            "user objected",
            record={"use": use, "objection": by},
            dropped=dropped,
            details={"use": use, "objection": by},
        )
    purpose = request.purpose or "; ".join(dict.fromkeys(declared[c] for c in scope.categories))
    return Allowed(
        data=data,
        body=body,
        payload_sha256=digest,
        categories=tuple(scope.categories),
        field_paths=tuple(scope.field_paths),
        dropped=tuple(outside),
        purpose=purpose,
        uses=tuple(uses),
    )


def _objected(objections: Collection[str], uses: Collection[str]) -> tuple[str, str] | None:
    """The first use covered by an objection, and that objection's key."""
    for use in sorted(uses):
        for key in sorted(objections):
            if use == key or use.startswith(key + "."):
                return use, key
    return None
