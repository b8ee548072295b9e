"""The one reading of a filter's time bounds (``since``, ``until``) for the API, the
console and the CLI: a datetime or ISO 8601 text, in UTC once read. A time without a
zone is refused, except from the console's ``datetime-local`` fields, which are read as
UTC (``naive_utc``)."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.core.errors import InvalidInput

__all__ = ["filter_time"]


def filter_time(
    value: str | datetime | None, name: str, *, naive_utc: bool = False
) -> datetime | None:
    """``value`` as an aware UTC datetime; None (or empty text) is no bound."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(
                f"{name}: {value!r} is not a date and time like 2026-01-31T12:00",
                details={"field": name},
            ) from None
    if value.tzinfo is None or value.utcoffset() is None:
        if not naive_utc:
            raise InvalidInput(
                f"{name} must include a time zone, e.g. 2026-01-31T12:00Z",
                details={"field": name},
            )
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
        raise InvalidInput(
            f"{name} is out of range once converted to UTC", details={"field": name}
        ) from None
