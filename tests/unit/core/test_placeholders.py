"""URL placeholders: where they may stand, and how values are filled in safely."""

from __future__ import annotations

import pytest

from broker.core.errors import InvalidInput, InvalidSetting, MissingSetting
from broker.core.placeholders import placeholder_problem, placeholders, render_url, sample_url

ZENDESK = "https://{subdomain}.zendesk.com/api/v2/tickets.json"


def test_host_label_and_path_values() -> None:
    assert placeholders("https://{a}.x.com/{b}/{a}") == ["a", "b", "a"]
    assert (
        render_url(ZENDESK, {"subdomain": "Acme"}) == "https://acme.zendesk.com/api/v2/tickets.json"
    )
    url = "https://www.googleapis.com/calendar/v3/calendars/{calendar_id}/events"
    assert render_url(url, {"calendar_id": "team@group.calendar.google.com"}) == (
        "https://www.googleapis.com/calendar/v3/calendars/team%40group.calendar.google.com/events"
    )


@pytest.mark.parametrize("value", ["evil.com/x", "a.b", "a:1", "-a", "", "a@b", "a/b"])
def test_a_host_value_must_be_one_dns_label(value: str) -> None:
    with pytest.raises(InvalidSetting, match="host name label") as bad:
        render_url(ZENDESK, {"subdomain": value})
    assert bad.value.code == "invalid_setting"
    assert bad.value.details["setting"] == "subdomain"
    assert bad.value.details["problem"] in bad.value.message


SECRET = "s3cr3t-value"


@pytest.mark.parametrize("value", [f"{SECRET}.evil.com", f"{SECRET}/x", "2852039166"])
def test_the_error_names_the_setting_and_the_problem_never_the_value(value: str) -> None:
    with pytest.raises(InvalidSetting) as bad:
        render_url(ZENDESK, {"subdomain": value})
    body = str(bad.value.to_dict())
    assert "'subdomain'" in bad.value.message
    assert value not in body and value not in str(bad.value)
    assert isinstance(bad.value, InvalidInput) and isinstance(bad.value, ValueError)


def test_a_path_value_cannot_add_segments_queries_or_fragments() -> None:
    url = render_url("https://api.x.com/repos/{repo}/issues", {"repo": "../../admin?x=1#f"})
    assert url == "https://api.x.com/repos/..%2F..%2Fadmin%3Fx%3D1%23f/issues"


def test_a_missing_value_is_a_missing_setting_naming_it() -> None:
    with pytest.raises(MissingSetting) as missing:
        render_url(ZENDESK, {})
    assert missing.value.code == "missing_setting"
    assert missing.value.message == "the connection has no setting 'subdomain'"
    assert missing.value.details == {"setting": "subdomain", "problem": "missing"}
    assert isinstance(missing.value, InvalidSetting)  # one except clause catches both


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("https://{nope}.zendesk.com/", "not a declared setting"),
        ("https://x{subdomain}.zendesk.com/", "whole label"),
        ("https://{subdomain}x.zendesk.com/", "whole label"),
        ("{subdomain}://x.com/", "scheme"),
        ("https://x.com:{subdomain}/", "only stand in the host name"),
        ("https://u:{subdomain}@x.com/", "only stand in the host name"),
        ("https://x.com/{Bad}", "not a valid setting name"),
        ("https://x.com/{", "unbalanced"),
        ("https://x.com/{}", "unbalanced or empty"),
    ],
)
def test_placeholder_problems(template: str, problem: str) -> None:
    found = placeholder_problem(template, {"subdomain"})
    assert found is not None and problem in found


def test_declared_and_builtin_placeholders_are_fine() -> None:
    assert placeholder_problem(ZENDESK, {"subdomain"}) is None
    assert (
        placeholder_problem("https://api.github.com/applications/{client_id}/token", set()) is None
    )
    assert placeholder_problem("https://{a}.example.com:8443/{b}", {"a", "b"}) is None
    # only the first label of a host may be a placeholder (tests/unit/core/test_manifest_hosts.py)
    assert "first label" in placeholder_problem("https://{a}.{b}.example.com/", {"a", "b"})
    assert sample_url(ZENDESK) == "https://sample.zendesk.com/api/v2/tickets.json"
