"""GitHub: the contract, and GitHub's own ways (403 rate limits, comments, app-token revocation)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any, ClassVar

import httpx
import pytest

from broker.testing import BrokerHarness, ConnectorContract, ErrorCase, FakeProvider, IssuedTokens
from connectors.github.connector import GitHubConnector

SETTINGS = {"owner": "acme", "repo": "roadmap"}
ISSUES = "https://api.github.com/repos/acme/roadmap/issues"
REPO = "https://api.github.com/repos/acme/roadmap"
ITEM = {
    "work_item": {
        "id": "W-7",
        "title": "Export to CSV",
        "description": "Users want their data.",
        "status": "open",
        "due_date": "2025-09-30",
        "assignee": {"name": "Grace", "email": "grace@example.com"},
        "comments": [{"body": "Started on it"}],
    },
    "author": {"name": "Linus"},
}


def github_tokens(tokens: IssuedTokens) -> dict[str, Any]:
    """POST login/oauth/access_token with Accept: application/json (an OAuth app)."""
    return {"access_token": tokens.access_token, "token_type": "bearer", "scope": "repo"}


def install_github(provider: FakeProvider) -> None:
    def created(request: httpx.Request) -> httpx.Response:
        title = json.loads(request.content)["title"]
        return httpx.Response(
            201,
            json={"id": 1296269, "number": 42, "title": title, "state": "open"},
            headers={"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4999"},
        )

    provider.api("POST", ISSUES, created)
    provider.api(
        "POST", url__regex=rf"{ISSUES}/\d+/comments", handler=httpx.Response(201, json={"id": 1})
    )
    provider.api("GET", REPO, {"id": 1296269, "full_name": "acme/roadmap", "has_issues": True})


GITHUB = {
    "token_response": github_tokens,
    "issue_refresh_tokens": False,
    "expires_in": None,
    "unauthorized": lambda: httpx.Response(
        401,
        json={"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
    ),
    "revoke_response": lambda active: httpx.Response(204),
}


class TestGitHubContract(ConnectorContract):
    connector = GitHubConnector
    settings: ClassVar[dict[str, str]] = SETTINGS
    example_payload: ClassVar[dict[str, Any]] = ITEM
    error_cases: ClassVar[list[ErrorCase]] = [
        ErrorCase(
            422,
            {
                "message": "Validation Failed",
                "errors": [{"resource": "Issue", "field": "title", "code": "missing_field"}],
                "documentation_url": "https://docs.github.com/rest/issues/issues#create-an-issue",
            },
            "Validation Failed (title: missing_field)",
        ),
        ErrorCase(410, {"message": "Issues are disabled for this repo"}, "Issues are disabled"),
        ErrorCase(404, {"message": "Not Found"}, "HTTP 404: Not Found"),
    ]

    def install_api(self, provider: FakeProvider) -> None:
        install_github(provider)

    def token_response(self, tokens: IssuedTokens) -> dict[str, Any]:
        return github_tokens(tokens)

    def provider_options(self) -> dict[str, Any]:
        return {k: v for k, v in GITHUB.items() if k != "token_response"}


@pytest.fixture
def github(make_harness) -> BrokerHarness:
    harness = make_harness(GitHubConnector, settings=SETTINGS, **GITHUB)
    install_github(harness.provider)
    return harness


def test_issue_uses_rest_v3_headers_and_only_granted_fields(github: BrokerHarness) -> None:
    connection = github.connect(optional=[])  # comments and names declined
    transfer = github.share(connection, ITEM)
    assert transfer["status"] == "delivered", transfer["reason"]
    assert transfer["response_id"] == "42"
    assert transfer["destination"] == "api.github.com/repos/acme/roadmap/issues"
    request = github.provider.requests[-1]
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    sent = json.loads(request.content)
    assert sent["title"] == "Export to CSV"
    assert "Grace" not in sent["body"] and "Linus" not in sent["body"]
    assert "Started on it" not in json.dumps(sent)


def test_comment_goes_to_the_issue_number_from_the_payload(github: BrokerHarness) -> None:
    connection = github.connect()
    data = {"work_item": {"issue_number": 42, "comments": [{"body": "Shipped"}]}}
    transfer = github.share(connection, data, action="comment")
    assert transfer["status"] == "delivered", transfer["reason"]
    request = github.provider.requests[-1]
    assert str(request.url) == f"{ISSUES}/42/comments"
    assert json.loads(request.content) == {"body": "Shipped"}


def test_comment_without_issue_number_fails_with_a_clear_reason(github: BrokerHarness) -> None:
    connection = github.connect()
    transfer = github.share(connection, {"work_item": {"title": "x"}}, action="comment")
    assert transfer["status"] == "failed"
    assert "needs work_item.issue_number" in transfer["reason"]


def test_primary_rate_limit_403_waits_until_reset(github: BrokerHarness) -> None:
    connection = github.connect()
    reset = int(time.time()) + 40
    limited = httpx.Response(
        403,
        json={"message": "API rate limit exceeded for user ID 1."},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
    )
    answers = iter([limited])
    ok = httpx.Response(201, json={"number": 43})
    github.provider.api("POST", ISSUES, lambda r: next(answers, ok))
    transfer = github.share(connection, ITEM)
    assert transfer["status"] == "delivered", transfer["reason"]
    assert [a.get("status") for a in transfer["attempts"]] == [403, 201]
    assert 35 <= github.waits[0] <= 40


@pytest.mark.parametrize(
    ("headers", "message", "wait"),
    [
        ({"retry-after": "7"}, "You have exceeded a secondary rate limit.", 7),
        ({}, "You have exceeded a secondary rate limit. Please wait a few minutes", 60),
    ],
)
def test_secondary_rate_limit_is_retried(
    github: BrokerHarness, headers: dict[str, str], message: str, wait: float
) -> None:
    connection = github.connect()
    answers = iter([httpx.Response(403, json={"message": message}, headers=headers)])
    ok = httpx.Response(201, json={"number": 44})
    github.provider.api("POST", ISSUES, lambda r: next(answers, ok))
    transfer = github.share(connection, ITEM)
    assert transfer["status"] == "delivered", transfer["reason"]
    assert github.waits == [wait]


def test_a_plain_403_is_a_refusal_not_a_rate_limit(github: BrokerHarness) -> None:
    connection = github.connect()
    github.provider.api(
        "POST",
        ISSUES,
        httpx.Response(403, json={"message": "Resource not accessible by integration"}),
    )
    transfer = github.share(connection, ITEM)
    assert transfer["status"] == "failed"
    assert transfer["reason"] == "HTTP 403: Resource not accessible by integration"
    assert len(transfer["attempts"]) == 1 and github.waits == []


def test_revocation_deletes_the_app_token_with_basic_auth(github: BrokerHarness) -> None:
    connection = github.connect()
    assert github.revoke(connection) == {"access_token": "revoked"}
    (revocation,) = github.provider.revocations
    assert revocation["style"] == "client_json"
    call = github.provider.router.calls.last.request
    assert call.method == "DELETE"
    assert str(call.url) == "https://api.github.com/applications/fake-client-id/token"
    pair = base64.b64encode(b"fake-client-id:fake-client-secret").decode()
    assert call.headers["authorization"] == f"Basic {pair}"


def test_repository_without_issues_refuses_the_connection(github: BrokerHarness) -> None:
    github.provider.api("GET", REPO, {"full_name": "acme/roadmap", "has_issues": False})
    with pytest.raises(AssertionError, match="has issues turned off"):
        github.connect()
