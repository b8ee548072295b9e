"""Recorded failure reasons: a stable code and a type, the exception's text only in the
operator log (broker.core.failures and the hooks that use it)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from broker.core.connector import BoundAction, Connector
from broker.core.errors import InvalidInput, InvalidSetting, MissingSetting
from broker.core.failures import FailureCode, failure_reason, setting_failure
from broker.core.placeholders import render_url
from tests.unit.core.test_egress import Wire, manifest_connector, run

SECRET = "secret-internal-detail"
log = logging.getLogger("broker.connectors")


def test_codes_round_trip_and_are_the_documented_words() -> None:
    assert {c.value for c in FailureCode} == {
        "connector_error",
        "invalid_result",
        "invalid_setting",
        "missing_setting",
    }
    for code in FailureCode:
        assert FailureCode(str(code)) is code
    assert failure_reason(FailureCode.CONNECTOR_ERROR, KeyError(SECRET)) == (
        "connector_error (KeyError)"
    )
    assert failure_reason(FailureCode.INVALID_RESULT, {"a": 1}) == "invalid_result (dict)"


def test_a_bad_setting_value_is_named_by_code_setting_and_problem_never_by_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.connectors")
    with pytest.raises(InvalidSetting) as bad:
        render_url("https://{sub}.example.com/", {"sub": f"{SECRET}/x"})
    reason = setting_failure(log, bad.value, where="connector 'z'")
    assert reason == (
        "invalid_setting (InvalidSetting): setting 'sub' is not a valid host name label "
        "(a host name label is 1-63 letters, digits or hyphens (no dots))"
    )
    assert SECRET not in caplog.text, "not even the operator log needs the value"
    assert "connector 'z'" in caplog.text and caplog.records[0].levelno == logging.WARNING


def test_a_missing_setting_names_the_manifests_placeholder() -> None:
    with pytest.raises(MissingSetting) as missing:
        render_url("https://{sub}.example.com/", {})
    assert setting_failure(log, missing.value, where="x") == (
        "missing_setting (MissingSetting): the connection has no setting 'sub'"
    )


class Exits(Connector):
    def deliver(self, action: BoundAction, payload: dict[str, Any], client: httpx.Client) -> None:
        raise SystemExit(SECRET)


class OwnHttpError(Connector):
    def deliver(self, action: BoundAction, payload: dict[str, Any], client: httpx.Client) -> None:
        raise httpx.InvalidURL(f"https://api.example.com/?key={SECRET}")


class SaysWhy(Connector):
    def deliver(self, action: BoundAction, payload: dict[str, Any], client: httpx.Client) -> None:
        raise InvalidInput("Example needs work_item.due_date")  # written for users, kept


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (Exits, "connector_error (SystemExit)"),
        (OwnHttpError, "connector_error (InvalidURL)"),
        (SaysWhy, "Example needs work_item.due_date"),
    ],
)
def test_what_a_hook_raises_is_recorded_by_type_unless_the_broker_tree_says_why(
    cls: type[Connector], expected: str
) -> None:
    outcome, _t = run(manifest_connector(cls), Wire())
    assert not outcome.delivered
    assert outcome.reason == expected
