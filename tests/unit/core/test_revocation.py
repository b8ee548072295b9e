"""Revocation in the provider's own way: RFC 7009, a bearer call, GitHub's client JSON."""

from __future__ import annotations

import json

import httpx
import pytest

from broker.core.catalog import default_catalog
from broker.core.manifest import OAuthSettings, parse_manifest
from broker.core.oauth import ClientCredentials
from broker.core.revocation import revoke_grant
from tests.unit.core.test_manifest import valid_raw

CREDS = ClientCredentials("cid", "csecret")
REVOKE = "https://example.com/oauth/revoke"


def oauth(**changes: object) -> OAuthSettings:
    raw = valid_raw()
    raw["oauth"] = {**raw["oauth"], **changes}
    return parse_manifest(raw, default_catalog(), source="t").oauth


def http(handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_rfc7009_revokes_refresh_then_access_and_tolerates_invalid_token() -> None:
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        seen.append(form)
        if form["token"] == "at":  # already ended with its grant
            return httpx.Response(400, json={"error": "invalid_token"})
        return httpx.Response(200)

    result = revoke_grant(http(handler), oauth(), CREDS, access_token="at", refresh_token="rt")
    assert result == {"refresh_token": "revoked", "access_token": "already invalid"}
    assert [(f["token"], f["token_type_hint"]) for f in seen] == [
        ("rt", "refresh_token"),
        ("at", "access_token"),
    ]


def test_rfc7009_other_refusals_are_reported_without_the_token() -> None:
    handler = lambda request: httpx.Response(503)  # noqa: E731
    result = revoke_grant(
        http(handler), oauth(), CREDS, access_token="at-secret", refresh_token=None
    )
    assert result == {
        "access_token": "failed: the provider's revocation endpoint answered HTTP 503"
    }


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(200, json={"ok": True, "revoked": True}), "revoked"),
        (httpx.Response(204), "revoked"),
        (httpx.Response(200, json={"ok": False, "error": "invalid_auth"}), "already invalid"),
        (httpx.Response(401, json={"error": "Couldn't authenticate you"}), "already invalid"),
        (httpx.Response(200, json={"ok": False, "error": "ratelimited"}), "failed: ratelimited"),
        (httpx.Response(500), "failed: HTTP 500"),
    ],
)
def test_bearer_style(answer: httpx.Response, expected: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    settings = oauth(revocation="bearer", revoke_method="DELETE")
    result = revoke_grant(http(handler), settings, CREDS, access_token="at", refresh_token="rt")
    assert result == {"access_token": expected}
    (request,) = seen
    assert (request.method, request.headers["authorization"]) == ("DELETE", "Bearer at")


def test_client_json_style_is_githubs_delete_an_app_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    settings = oauth(revocation="client_json", revoke_method="DELETE")
    result = revoke_grant(http(handler), settings, CREDS, access_token="gho_x", refresh_token=None)
    assert result == {"access_token": "revoked"}
    (request,) = seen
    assert request.method == "DELETE"
    assert json.loads(request.content) == {"access_token": "gho_x"}
    assert request.headers["authorization"].startswith("Basic ")


def test_no_endpoint_and_unreachable_endpoint() -> None:
    assert revoke_grant(
        http(lambda r: httpx.Response(200)),
        oauth(revoke_url=None),
        CREDS,
        access_token="a",
        refresh_token=None,
    ) == {"provider": "the provider has no revocation endpoint"}

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down")

    settings = oauth(revocation="bearer")
    result = revoke_grant(http(down), settings, CREDS, access_token="a", refresh_token=None)
    reached = "failed: the provider's revocation endpoint could not be reached"
    assert result == {"access_token": f"{reached} (ConnectError)"}
