"""Every error the broker raises on purpose, in one tree.

    BrokerError                      code               status
    ├── InvalidInput                 invalid_input      422
    │   ├── PayloadTooLarge          payload_too_large  413
    │   ├── ReturnUrlNotAllowed      return_url_not_allowed 422
    │   └── InvalidSetting           invalid_setting    422
    │       └── MissingSetting       missing_setting    422
    ├── AuthenticationRequired       unauthenticated    401
    ├── PermissionDenied             forbidden          403
    │   ├── OutsideGrant             outside_grant      403
    │   ├── PurposeNotDeclared       purpose_not_declared 403
    │   ├── ForbiddenUse             forbidden_use      403
    │   ├── UserObjected             user_objected      403
    │   └── EgressDenied             egress_denied      403
    ├── NotFound                     not_found          404
    ├── Conflict                     conflict           409
    │   ├── ConnectionNotActive      connection_not_active 409
    │   ├── IdempotencyConflict      idempotency_key_reused 409
    │   └── NotCancellable           not_cancellable    409
    ├── SessionInvalid               session_invalid    400
    ├── RateLimited                  rate_limited       429
    ├── StateInvalid                 state_invalid      400
    ├── ManifestError                manifest_invalid   422
    │   └── HookSignatureInvalid     hook_signature_invalid 422
    ├── CatalogError                 catalog_invalid    422
    ├── VaultError                   vault_error        500
    ├── ConfigurationError           misconfigured      500
    ├── ProviderError                provider_error     502
    │   ├── DeliveryRejected         delivery_rejected  502
    │   └── TokenRejected            token_rejected     502
    ├── ConnectorFailed              connector_failed   502
    ├── DeliveryFailed               delivery_failed    502
    │   └── OutcomeUnknown           outcome_unknown    502
    ├── OutcomeNotRecorded           outcome_not_recorded 503
    └── InvariantBroken              internal_error     500

Each error carries a stable ``code`` (rendered by the API as
``{"error": {"code", "message", "details"}}``), a human ``message`` and
JSON-safe ``details``. Messages never contain tokens or secrets.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "AuthenticationRequired",
    "BrokerError",
    "CatalogError",
    "ConfigurationError",
    "Conflict",
    "ConnectionNotActive",
    "ConnectorFailed",
    "DeliveryFailed",
    "DeliveryRejected",
    "EgressDenied",
    "ForbiddenUse",
    "HookSignatureInvalid",
    "IdempotencyConflict",
    "InvalidInput",
    "InvalidSetting",
    "InvariantBroken",
    "ManifestError",
    "MissingSetting",
    "NotCancellable",
    "NotFound",
    "OutcomeNotRecorded",
    "OutcomeUnknown",
    "OutsideGrant",
    "PayloadTooLarge",
    "PermissionDenied",
    "ProviderError",
    "PurposeNotDeclared",
    "RateLimited",
    "ReturnUrlNotAllowed",
    "SessionInvalid",
    "StateInvalid",
    "TokenRejected",
    "UserObjected",
    "VaultError",
    "error_body",
]


class BrokerError(Exception):
    code = "broker_error"
    status = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract's error shape, the one place it is built: API answers, the
    OpenAPI examples and :meth:`BrokerError.to_dict`."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


class InvalidInput(BrokerError):
    code = "invalid_input"
    status = 422


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"
    status = 413

    @classmethod
    def over(cls, limit: int) -> PayloadTooLarge:
        """A request body over ``limit`` bytes (every reader of a body says it alike)."""
        return cls(
            f"the request body is larger than the limit of {limit} bytes",
            details={"limit_bytes": limit},
        )


class ReturnUrlNotAllowed(InvalidInput):
    code = "return_url_not_allowed"


class InvalidSetting(InvalidInput, ValueError):
    """A connection setting cannot fill a placeholder of a manifest URL where the
    placeholder stands (:func:`broker.core.placeholders.render_url`).

    ``details["setting"]`` names the setting (the placeholder's name) and
    ``details["problem"]`` says what is wrong; neither the message nor the details
    ever hold the value, which may be anything a user typed. Also a ``ValueError``,
    so code written against the builtin errors ``render_url`` raised before still
    catches it."""

    code = "invalid_setting"

    @classmethod
    def host_label(cls, setting: str, problem: str) -> InvalidSetting:
        """The value of ``setting`` cannot be the first label of a host: ``problem``
        (one of :func:`~broker.core.placeholders.host_label_problem`'s fixed words)."""
        return cls(
            f"setting {setting!r} is not a valid host name label ({problem})",
            details={"setting": setting, "problem": problem},
        )


class MissingSetting(InvalidSetting):
    """The connection has no value for a placeholder of a manifest URL (its settings
    predate the manifest, or the caller left out a built-in such as ``client_id``)."""

    code = "missing_setting"

    @classmethod
    def named(cls, setting: str) -> MissingSetting:
        return cls(
            f"the connection has no setting {setting!r}",
            details={"setting": setting, "problem": "missing"},
        )


class AuthenticationRequired(BrokerError):
    code = "unauthenticated"
    status = 401


class PermissionDenied(BrokerError):
    code = "forbidden"
    status = 403


class OutsideGrant(PermissionDenied):
    code = "outside_grant"


class PurposeNotDeclared(PermissionDenied):
    code = "purpose_not_declared"


class ForbiddenUse(PermissionDenied):
    """The transfer asks for a data use the operator's policy forbids (e.g. a sale)."""

    code = "forbidden_use"


class UserObjected(PermissionDenied):
    """The user objected to this data use (GDPR Art. 21(2)-(3), e.g. marketing)."""

    code = "user_objected"


class EgressDenied(PermissionDenied):
    """A connector tried to reach a host its manifest does not declare; nothing was sent."""

    code = "egress_denied"


class NotFound(BrokerError):
    code = "not_found"
    status = 404


class Conflict(BrokerError):
    code = "conflict"
    status = 409


class ConnectionNotActive(Conflict):
    code = "connection_not_active"


class IdempotencyConflict(Conflict):
    """The idempotency key was used before with a different request."""

    code = "idempotency_key_reused"


class SessionInvalid(BrokerError):
    """A connect or user session token that is unknown, expired, used or forged."""

    code = "session_invalid"
    status = 400


class RateLimited(BrokerError):
    """Too many attempts (console sign-in); ``retry_after`` seconds until the next is heard.

    Rendered with a ``Retry-After`` header."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = max(1, math.ceil(retry_after)) if retry_after is not None else 60
        details = {"retry_after": self.retry_after} if retry_after is not None else None
        super().__init__(message, details=details)


class StateInvalid(BrokerError):
    """An OAuth ``state`` that is unknown, expired, replayed or forged."""

    code = "state_invalid"
    status = 400


class ManifestError(BrokerError):
    """A connector manifest that fails validation; ``details["problems"]`` lists each."""

    code = "manifest_invalid"
    status = 422


class HookSignatureInvalid(ManifestError):
    """A connector class overrides a hook with parameters other than the hook's own;
    ``details`` name the connector, and ``details["problems"]`` each wrong hook."""

    code = "hook_signature_invalid"


class CatalogError(BrokerError):
    code = "catalog_invalid"
    status = 422


class VaultError(BrokerError):
    """A ciphertext that cannot be opened: tampered, wrong binding or unknown key."""

    code = "vault_error"
    status = 500


class ConfigurationError(BrokerError):
    """The operator's configuration is missing something the request needs."""

    code = "misconfigured"
    status = 500


class ProviderError(BrokerError):
    """The third party's OAuth or API endpoint answered with an error or not at all."""

    code = "provider_error"
    status = 502


class DeliveryRejected(ProviderError):
    """Raised by a connector: the third party refused the data; the message is its reason."""

    code = "delivery_rejected"


class TokenRejected(ProviderError):
    """Raised by a connector: the third party refused the access token (as a 401 would say).

    The broker refreshes the token once and runs the connector's hook again."""

    code = "token_rejected"


class ConnectorFailed(BrokerError):
    """A connector's own code raised, returned something invalid or did not finish in time."""

    code = "connector_failed"
    status = 502


class DeliveryFailed(BrokerError):
    """The transfer was recorded and attempted, and the third party did not accept it."""

    code = "delivery_failed"
    status = 502


class OutcomeUnknown(DeliveryFailed):
    """The delivery may or may not have reached the third party (its worker stopped
    mid-flight and the third party is not known to honour idempotency keys)."""

    code = "outcome_unknown"


class OutcomeNotRecorded(BrokerError):
    """The delivery ran but its outcome could not be written (the database failed);
    the transfer stays pending under its lease and is resolved when the lease ends."""

    code = "outcome_not_recorded"
    status = 503


class NotCancellable(Conflict):
    """The transfer has started or ended; only a transfer still queued can be cancelled."""

    code = "not_cancellable"


class InvariantBroken(BrokerError):
    """Something the broker's own code guarantees does not hold: a row it has just
    written is gone, a value it has just set is missing. A bug (or a database changed
    under the broker), never the caller's doing; rendered as the ``internal_error`` an
    unexpected exception is, with a message that names what broke and nothing else."""

    code = "internal_error"
    status = 500
