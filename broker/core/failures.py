"""Why a call into a connector failed, in the words the broker records.

A transfer's ``reason``, a connection's ``last_error`` and the audit entries that
copy them are shown to users and written into a log that can never be scrubbed.
So they never carry the text of an exception raised by a connector's code (or by
the placeholder rules on a connection's settings): that text may hold anything,
a payload fragment, a URL with a key in it, an internal detail. They carry a
stable code and the exception's type instead, e.g. ``connector_error (KeyError)``;
the exception's text goes to the operator log only (logger ``broker.connectors``,
level warning).

A connection setting that cannot fill a placeholder of the manifest's URLs is the
one failure of the broker's own rules recorded here: ``invalid_setting
(InvalidSetting): setting 'subdomain' is not a valid host name label (…)`` or
``missing_setting (MissingSetting): …``; the message names the setting and the
problem, never the value.

Messages the broker composes itself are kept as they are: time limits, egress
refusals, ``HTTP <status>`` answers of the third party, token refreshes. So is the
message of an error of the broker's tree (:mod:`broker.core.errors`) that a hook
raises on purpose, e.g. :class:`~broker.core.errors.DeliveryRejected` with the third
party's reason or ``InvalidInput("… needs work_item.due_date …")``: that is the
documented way for a connector to say why, and such a message is written for users.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from broker.core.errors import InvalidSetting

__all__ = ["FailureCode", "failure_reason", "logged_failure", "setting_failure"]

_TEXT_LIMIT = 300


class FailureCode(StrEnum):
    """The stable first word of a failure's recorded reason."""

    CONNECTOR_ERROR = "connector_error"
    """A connector's code raised an exception outside the broker's error tree."""
    INVALID_RESULT = "invalid_result"
    """A ``deliver`` hook returned something other than ``DeliveryResult`` or ``None``."""
    INVALID_SETTING = "invalid_setting"
    """A connection setting cannot stand where the manifest's URL placeholder puts it."""
    MISSING_SETTING = "missing_setting"
    """The connection has no value for a placeholder of the manifest's URLs."""


def failure_reason(code: FailureCode, what: object) -> str:
    """``"<code> (<type name of what>)"``: what is recorded for an exception (or, for
    ``invalid_result``, the value returned); never the exception's text."""
    return f"{code.value} ({type(what).__name__})"


def logged_failure(
    log: logging.Logger, code: FailureCode, exc: BaseException, *, where: str
) -> str:
    """Log ``exc`` for the operator (its type and text, cut to 300 characters, and its
    traceback) at warning level; return the reason to record, which has neither."""
    text = str(exc)[:_TEXT_LIMIT]
    log.warning("%s: %s (%s): %s", where, code.value, type(exc).__name__, text, exc_info=exc)
    return failure_reason(code, exc)


def setting_failure(log: logging.Logger, exc: InvalidSetting, *, where: str) -> str:
    """The reason for a connection setting that cannot fill a manifest URL (the
    :class:`~broker.core.errors.InvalidSetting` or its
    :class:`~broker.core.errors.MissingSetting` of
    :func:`~broker.core.placeholders.render_url`): the error's own code and type, then
    its message, which names the setting and the problem and never the value, e.g.
    ``missing_setting (MissingSetting): the connection has no setting 'owner'``.
    ``where`` (which connector, which URL) goes to the operator log."""
    code = FailureCode(exc.code)
    log.warning("%s: %s (%s): %s", where, code.value, type(exc).__name__, exc.message)
    return f"{failure_reason(code, exc)}: {exc.message}"
