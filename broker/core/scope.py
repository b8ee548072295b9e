"""Scope checks: which fields of a payload a connection's grant lets through.

Every leaf of the payload is mapped to a catalog category by its field path
(:meth:`Catalog.category_for`). A field whose category is not granted, or
that the catalog does not know, is *outside the grant*. In ``reject`` mode
any such field refuses the whole transfer; in ``drop`` mode those fields are
removed and the rest goes. Either way the decision names each field and its
category so the refusal or the drop can be logged exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from broker.core.catalog import Catalog, flatten
from broker.core.errors import InvalidInput

__all__ = [
    "FieldRef",
    "ScopeDecision",
    "canonical_payload",
    "check_scope",
    "drop_fields",
    "payload_digest",
]


@dataclass(frozen=True, order=True)
class FieldRef:
    path: str
    category: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "category": self.category}


@dataclass(frozen=True)
class ScopeDecision:
    allowed: tuple[FieldRef, ...]
    outside: tuple[FieldRef, ...]

    @property
    def ok(self) -> bool:
        return not self.outside

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(sorted({f.category for f in self.allowed if f.category}))

    @property
    def field_paths(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.allowed)


def check_scope(
    catalog: Catalog, data: Mapping[str, Any], granted: Collection[str]
) -> ScopeDecision:
    """Classify every distinct field path of ``data`` as allowed or outside the grant."""
    if not isinstance(data, Mapping):
        raise InvalidInput("data must be a JSON object", details={"field": "data"})
    try:
        leaves = flatten(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"data: {exc}", details={"field": "data"}) from None
    allowed: set[FieldRef] = set()
    outside: set[FieldRef] = set()
    for path, _value in leaves:
        category = catalog.category_for(path)
        ref = FieldRef(path, category)
        (allowed if category is not None and category in granted else outside).add(ref)
    return ScopeDecision(tuple(sorted(allowed)), tuple(sorted(outside)))


def drop_fields(data: Mapping[str, Any], keep: Collection[str]) -> dict[str, Any]:
    """A copy of ``data`` with only the leaves whose path is in ``keep``.

    Containers left empty by the drop are removed too, so the third party
    does not learn which fields existed.
    """

    def walk(value: Any, path: str) -> tuple[bool, Any]:
        if isinstance(value, Mapping):
            if not value:
                return path in keep, {}
            out = {}
            for key, child in value.items():
                kept, new = walk(child, f"{path}.{key}" if path else str(key))
                if kept:
                    out[key] = new
            return bool(out), out
        if isinstance(value, (list, tuple)):
            if not value:
                return path in keep, []
            items = [new for kept, new in (walk(v, path) for v in value) if kept]
            return bool(items), items
        return path in keep, value

    _kept, result = walk(data, "")
    return result if isinstance(result, dict) else {}


def canonical_payload(data: Mapping[str, Any]) -> bytes:
    """The exact bytes sent: compact JSON in the payload's own key order, UTF-8."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def payload_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
