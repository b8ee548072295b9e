"""Times as the broker writes them everywhere (API, exports, CLI): RFC 3339 in UTC with
``Z``, e.g. ``2026-12-03T09:41:46.141992Z`` (docs/api.md#conventions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["json_default", "rfc3339"]


def rfc3339(value: datetime) -> str:
    """``value`` in UTC with ``Z``; a naive time is taken as UTC (as the store keeps it)."""
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.isoformat().replace("+00:00", "Z")


def json_default(value: Any) -> str:
    """``json.dumps(..., default=json_default)``: times as :func:`rfc3339`, else ``str``."""
    return rfc3339(value) if isinstance(value, datetime) else str(value)
