"""Single-use tickets: a secret shown once, stored as its digest, good until it expires
or is used, whichever comes first.

Three things are tickets: connect links and user links (``connect_sessions``) and OAuth
attempts (``oauth_attempts``, whose ticket is the ``state``). Claiming one is a single
conditional write in the store (:func:`broker.store.tickets.claim_ticket`); this module
says only why a ticket is refused, so each caller can word it for its reader.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

__all__ = ["TicketRefusal", "ticket_refusal"]


class TicketRefusal(StrEnum):
    """Why a ticket cannot be used."""

    UNKNOWN = "unknown"  # no ticket of this kind has the digest
    USED = "used"  # claimed before (a used ticket says so even after it expired)
    EXPIRED = "expired"


def ticket_refusal(
    *, found: bool, used_at: datetime | None, expires_at: datetime | None, now: datetime
) -> TicketRefusal | None:
    """Why the ticket (``found`` or not, with its ``used_at`` and ``expires_at``) is not
    usable at ``now``, or ``None`` when it is. A ticket expires at ``expires_at`` itself."""
    if not found:
        return TicketRefusal.UNKNOWN
    if used_at is not None:
        return TicketRefusal.USED
    if expires_at is None or expires_at <= now:
        return TicketRefusal.EXPIRED
    return None
