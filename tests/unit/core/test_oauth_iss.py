"""RFC 9207 ``iss`` checks (issue 9, point 2) and the manifest fields behind them."""

from __future__ import annotations

import pytest

from broker.core.catalog import default_catalog
from broker.core.errors import ManifestError
from broker.core.manifest import parse_manifest
from broker.core.oauth import issuer_problem
from broker.demo import sandbox_manifest

AUTHORIZE = "https://auth.example.com/oauth/authorize"
ISSUER = "https://auth.example.com/realms/main"


@pytest.mark.parametrize(
    ("iss", "expected", "required", "refused"),
    [
        (None, None, False, False),  # the provider sends none and never said it would
        (None, ISSUER, False, False),
        (None, ISSUER, True, True),  # it always sends one: its absence is refused
        (ISSUER, ISSUER, True, False),
        (ISSUER, ISSUER, False, False),
        ("https://evil.example.com", ISSUER, True, True),
        (ISSUER + "/", ISSUER, False, True),  # simple string comparison (RFC 9207 §2.4)
        ("https://AUTH.example.com/realms/main", ISSUER, False, True),
        # no issuer configured: the iss sent must be on the authorize URL's origin
        ("https://auth.example.com", None, False, False),
        ("https://auth.example.com:443/x", None, False, False),
        ("https://evil.example.com", None, False, True),
        ("http://auth.example.com", None, False, True),
        ("https://auth.example.com:8443", None, False, True),
        ("not a url", None, False, True),
        ("", None, False, True),
    ],
)
def test_issuer_problem(iss: str | None, expected: str | None, required: bool, refused: bool):
    problem = issuer_problem(iss, expected=expected, required=required, authorize_url=AUTHORIZE)
    assert (problem is not None) is refused, problem


def _manifest(**oauth: object):
    raw = sandbox_manifest("https://sandbox.example.com")
    raw["oauth"] = {**raw["oauth"], **oauth}
    return parse_manifest(raw, default_catalog(), source="test")


def test_manifest_defaults() -> None:
    oauth = _manifest().oauth
    assert oauth.issuer is None
    assert oauth.authorization_response_iss_parameter_supported is False
    assert oauth.redirect == "per_connector"


def test_manifest_issuer_fields() -> None:
    oauth = _manifest(
        issuer=ISSUER, authorization_response_iss_parameter_supported=True, redirect="shared"
    ).oauth
    assert oauth.issuer == ISSUER and oauth.redirect == "shared"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"authorization_response_iss_parameter_supported": True}, "needs oauth.issuer"),
        ({"issuer": "http://auth.example.com"}, "only https"),
        ({"issuer": "https://auth.example.com/?tenant=1"}, "query or fragment"),
        ({"redirect": "anywhere"}, "per_connector"),
    ],
)
def test_manifest_issuer_problems(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError) as err:
        _manifest(**fields)
    assert message in " ".join(err.value.details["problems"])
