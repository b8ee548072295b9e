"""Slack: the contract, and Slack's own ways (200 + ok:false, bot tokens, 429, rotation)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import httpx
import pytest

from broker.connector import InvalidInput
from broker.testing import (
    BrokerHarness,
    ConnectorContract,
    ErrorCase,
    FakeProvider,
    IssuedTokens,
    load_connector,
)
from connectors.slack.connector import SlackConnector, render_update

CHANNEL = "C0123456789"
POST = "https://slack.com/api/chat.postMessage"
AUTH_TEST = "https://slack.com/api/auth.test"
UPDATE = {
    "work_item": {
        "id": "W-42",
        "title": "Fix <login> & signup",
        "status": "in review",
        "due_date": "2025-07-01",
        "url": "https://app.example.com/w/42",
        "assignee": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "comments": [{"body": "Looks good"}],
    },
    "author": {"name": "Bob"},
}


def slack_tokens(tokens: IssuedTokens) -> dict[str, Any]:
    """oauth.v2.access, as Slack answers it for a bot token."""
    body: dict[str, Any] = {
        "ok": True,
        "access_token": tokens.access_token,
        "token_type": "bot",
        "scope": "chat:write",
        "bot_user_id": "U0KRQLJ9H",
        "app_id": "A0KRD7HC3",
        "team": {"name": "Acme", "id": "T9TK3CUKW"},
        "enterprise": None,
        "authed_user": {"id": "U1234", "scope": "", "token_type": "user"},
    }
    if tokens.refresh_token:  # token rotation turned on for the app
        body.update(refresh_token=tokens.refresh_token, expires_in=tokens.expires_in)
    return body


def posted(request: httpx.Request) -> httpx.Response:
    message = json.loads(request.content)
    return httpx.Response(
        200,
        json={"ok": True, "channel": message["channel"], "ts": "1503435956.000247"},
        headers={"Content-Type": "application/json; charset=utf-8"},
    )


def install_slack(provider: FakeProvider) -> None:
    provider.api("POST", POST, posted)
    provider.api("POST", AUTH_TEST, {"ok": True, "team": "Acme", "team_id": "T9TK3CUKW"})


SLACK = {
    "token_response": slack_tokens,
    "issue_refresh_tokens": False,
    "expires_in": None,
    "unauthorized": lambda: httpx.Response(200, json={"ok": False, "error": "invalid_auth"}),
    "revoke_response": lambda active: httpx.Response(200, json={"ok": True, "revoked": True}),
}


class TestSlackContract(ConnectorContract):
    connector = SlackConnector
    settings: ClassVar[dict[str, str]] = {"channel": CHANNEL}
    example_payload: ClassVar[dict[str, Any]] = UPDATE
    error_cases: ClassVar[list[ErrorCase]] = [
        ErrorCase(200, {"ok": False, "error": "channel_not_found"}, "channel_not_found"),
        ErrorCase(200, {"ok": False, "error": "not_in_channel"}, "not_in_channel"),
        ErrorCase(200, {"ok": False, "error": "msg_too_long"}, "msg_too_long"),
    ]

    def install_api(self, provider: FakeProvider) -> None:
        install_slack(provider)

    def token_response(self, tokens: IssuedTokens) -> dict[str, Any]:
        return slack_tokens(tokens)

    def provider_options(self) -> dict[str, Any]:
        return {k: v for k, v in SLACK.items() if k != "token_response"}


@pytest.fixture
def slack(make_harness) -> BrokerHarness:
    harness = make_harness(SlackConnector, settings={"channel": CHANNEL}, **SLACK)
    install_slack(harness.provider)
    return harness


def test_message_is_escaped_blocks_with_only_the_granted_fields(slack: BrokerHarness) -> None:
    connection = slack.connect(optional=["user.content.comments"])  # name declined
    transfer = slack.share(connection, UPDATE)
    assert transfer["status"] == "delivered", transfer["reason"]
    assert transfer["response_id"] == f"{CHANNEL}/1503435956.000247"
    sent = json.loads(slack.provider.requests[-1].content)
    assert sent["channel"] == CHANNEL
    assert sent["unfurl_links"] is False
    assert "Fix &lt;login&gt; &amp; signup" in sent["text"]
    text = json.dumps(sent)
    assert "Ada Lovelace" not in text and "Bob" not in text, "user.name was declined"
    assert "ada@example.com" not in text, "email is not declared at all"
    assert "> Looks good" in text


def test_http_200_with_ok_false_is_a_failed_transfer(slack: BrokerHarness) -> None:
    connection = slack.connect()
    slack.provider.api("POST", POST, {"ok": False, "error": "is_archived"})
    transfer = slack.share(connection, UPDATE)
    assert transfer["status"] == "failed"
    assert transfer["reason"] == "Slack refused the message: is_archived"
    assert transfer["response_status"] == 200


def test_rate_limit_429_is_retried_after_the_delay_slack_asks_for(slack: BrokerHarness) -> None:
    connection = slack.connect()
    answers = iter([httpx.Response(429, headers={"Retry-After": "30"}, json={"ok": False})])
    slack.provider.api("POST", POST, lambda r: next(answers, None) or posted(r))
    transfer = slack.share(connection, UPDATE)
    assert transfer["status"] == "delivered", transfer["reason"]
    assert [a.get("status") for a in transfer["attempts"]] == [429, 200]
    assert slack.waits == [30]


def test_expired_rotating_token_is_refreshed_and_the_message_sent(make_harness) -> None:
    options = {**SLACK, "issue_refresh_tokens": True, "expires_in": 43200}
    harness = make_harness(SlackConnector, settings={"channel": CHANNEL}, **options)
    install_slack(harness.provider)
    connection = harness.connect()
    harness.provider.expire_access_tokens()
    harness.provider.unauthorized = lambda: httpx.Response(
        200, json={"ok": False, "error": "token_expired"}
    )
    transfer = harness.share(connection, UPDATE)
    assert transfer["status"] == "delivered", transfer["reason"]
    assert harness.provider.token_requests.count("refresh_token") == 1


def test_failed_auth_test_refuses_the_connection_and_revokes_the_token(
    slack: BrokerHarness,
) -> None:
    slack.provider.api("POST", AUTH_TEST, {"ok": False, "error": "account_inactive"})
    with pytest.raises(AssertionError, match="account_inactive"):
        slack.connect()
    assert slack.provider.revocations, "the token obtained was revoked"
    assert not any(slack.provider.access_tokens.values())


def test_revocation_uses_auth_revoke_with_the_bot_token(slack: BrokerHarness) -> None:
    connection = slack.connect()
    assert slack.revoke(connection) == {"access_token": "revoked"}
    (revocation,) = slack.provider.revocations
    assert revocation["style"] == "bearer"


def test_channel_setting_must_be_a_channel_id() -> None:
    manifest = load_connector(SlackConnector).manifest
    with pytest.raises(InvalidInput, match=r"settings\.channel"):
        manifest.validate_settings({"channel": "#general"})


def test_render_without_optional_data() -> None:
    text, blocks = render_update({"work_item": {"id": "W-1"}})
    assert text == "*W-1*"
    assert len(blocks) == 1
