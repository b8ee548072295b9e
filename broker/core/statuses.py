"""The states a connection and a transfer are in, and what revoking one did.

Each is a :class:`~enum.StrEnum`: a member *is* its string (``TransferStatus.DELIVERED
== "delivered"``), so database columns, JSON answers, webhook payloads and audit entries
hold the same words as before the types existed, and a value read back from any of
them is turned into a member with ``TransferStatus(value)``. The public words are
listed in ``docs/api.md`` (connection ``status``, *Transfer statuses*) and
``docs/auditors.md`` (``connection.revoked``); a test holds the docs to these members.

The sets derived from them (which transfer statuses are final, which count as a
disclosure, which connections are live) are defined here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

__all__ = [
    "DISCLOSED_TRANSFER_STATUSES",
    "FINAL_TRANSFER_STATUSES",
    "LIVE_CONNECTION_STATUSES",
    "ConnectionStatus",
    "RevocationOutcome",
    "TokenRevocation",
    "TransferStatus",
    "revocation_failed",
]


class ConnectionStatus(StrEnum):
    """A connection's ``status``."""

    PENDING = "pending"
    """Approved on the consent page, not completed at the provider (``last_error`` says
    why if the callback failed)."""
    PENDING_CONFIRMATION = "pending_confirmation"
    """Connected with ``confirm: true``; waits for the host's ``POST …/confirm``."""
    ACTIVE = "active"
    """Transfers may use it."""
    RECONSENT_REQUIRED = "reconsent_required"
    """The provider refused a token refresh for the user's grant, or the third party's
    terms changed significantly: the user must agree again."""
    ERROR = "error"
    """Set by a token refresh the provider refused for good for another reason than the
    user's grant (``invalid_client``, ``invalid_request``, ``invalid_scope``,
    ``unsupported_grant_type``, another 4xx but 408 and 429): the OAuth client must be
    fixed and the user reconnected (:mod:`broker.flows.tokens`)."""
    REVOKING = "revoking"
    """A revocation has claimed it and is in progress (:mod:`broker.flows.revoke`)."""
    REVOKED = "revoked"
    """Tokens destroyed, consent withdrawn; final."""


LIVE_CONNECTION_STATUSES = (
    ConnectionStatus.ACTIVE,
    ConnectionStatus.PENDING_CONFIRMATION,
    ConnectionStatus.RECONSENT_REQUIRED,
    ConnectionStatus.ERROR,
)
"""Connected and not being revoked: what ``/me`` lists as connected and what a
reconnect re-authorises instead of making a second connection."""


class TransferStatus(StrEnum):
    """A transfer's ``status`` (``docs/api.md``, *Transfer statuses*)."""

    PENDING = "pending"
    """Accepted; queued, being sent, or waiting for a rescheduled retry."""
    DELIVERED = "delivered"
    """The third party acknowledged it with a 2xx answer."""
    FAILED = "failed"
    """Refused by the third party, not answered, or given up (``reason``, ``attempts``)."""
    BLOCKED = "blocked"
    """Refused by the broker's checks; nothing was sent."""
    OUTCOME_UNKNOWN = "outcome_unknown"
    """The worker sending it stopped mid-flight; it may or may not have arrived."""
    CANCELLED = "cancelled"
    """Ended before it was sent."""


FINAL_TRANSFER_STATUSES = tuple(s for s in TransferStatus if s is not TransferStatus.PENDING)
"""Every status but ``pending``; a final status never changes."""

DISCLOSED_TRANSFER_STATUSES = (TransferStatus.DELIVERED, TransferStatus.OUTCOME_UNKNOWN)
"""What reports count as a disclosure (``outcome_unknown`` as a possible one)."""


class RevocationOutcome(StrEnum):
    """The ``outcome`` of a ``connection.revoked`` audit entry."""

    REVOKED = "revoked"
    PROVIDER_REVOCATION_FAILED = "provider_revocation_failed"
    """The local tokens were destroyed, but a revocation at the provider failed."""


class TokenRevocation(StrEnum):
    """What revoking did with one token (or hook) in ``provider_revocation``: the value,
    or its first words before ``": <why>"`` (:meth:`because`)."""

    REVOKED = "revoked"
    ALREADY_INVALID = "already invalid"
    """The provider already considered the token invalid: counts as revoked."""
    FAILED = "failed"
    NOT_ATTEMPTED = "not attempted"
    """The provider could not be called (e.g. its credentials are missing)."""

    def because(self, why: str) -> str:
        """``"<value>: <why>"``, e.g. ``failed: HTTP 500``."""
        return f"{self.value}: {why}"


def revocation_failed(results: Mapping[str, str]) -> bool:
    """Whether any result of ``provider_revocation`` is a failure."""
    return any(v.startswith(TokenRevocation.FAILED) for v in results.values())
