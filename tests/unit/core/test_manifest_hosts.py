"""Manifest hosts: only DNS names and IP literals load, a placeholder fills at most the
first label of the third party's own domain, a filled value is one harmless DNS label,
and the pages' CSP is rebuilt from parsed origins (issue 9, points 3 and 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.cli import main
from broker.core.catalog import Catalog, default_catalog
from broker.core.errors import InvalidInput, InvalidSetting, ManifestError
from broker.core.manifest import Manifest, load_manifest_file, parse_manifest
from broker.core.placeholders import render_url
from broker.core.urls import origin
from broker.web.csp import authorize_origin, content_security_policy, logo_origins
from tests.unit.core.test_manifest import VALID_TOML, valid_raw

CSP_INJECTION = "https://cdn.evil.example;script-src * 'unsafe-inline';x/logo.png"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return default_catalog()


def problems(raw: dict[str, Any], catalog: Catalog) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw, catalog, source="test")
    return info.value.details["problems"]


def with_tenant(**oauth: str) -> dict[str, Any]:
    raw = valid_raw()
    raw["settings"] = [{"name": "tenant", "label": "Tenant", "pattern": "^.*$"}]
    raw["oauth"].update(oauth)
    return raw


@pytest.mark.parametrize(
    "url",
    [
        CSP_INJECTION,
        "https://cdn.evil.example;script-src;x/logo.png",  # no space, no quote
        "https://cdn evil.example/logo.png",
        "https://cdn.example\t/logo.png",
        "https://cdn'evil.example/logo.png",
        'https://cdn"evil.example/logo.png',
        "https://cdn.example/logo.png' 'unsafe-inline",
        "https://cdn.example,evil.example/logo.png",
        "https://cdn.example\\.evil.example/logo.png",
        "https://cdn_x.example/logo.png",
        "https://-cdn.example/logo.png",
        "https://cdn..example/logo.png",
        "https://bücher.example/logo.png",
        "https://2852039166/logo.png",
        "https://0x7f000001/logo.png",
        "https://127.1/logo.png",
        "https://[fe80::1%25eth0]/logo.png",
        "https://cdn.example:0/logo.png",
    ],
)
def test_a_bad_host_is_a_manifest_error(url: str, catalog: Catalog) -> None:
    raw = {**valid_raw(), "logo_url": url}
    (problem,) = problems(raw, catalog)
    assert problem.startswith(f"logo_url: {url!r}")
    assert problem.endswith(("is not a valid host name or IP address", "characters", "not valid"))


def test_a_bad_host_in_a_toml_file_fails_connectors_check(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "evil.toml"
    bad.write_text(
        VALID_TOML.replace(
            'terms_url = "https://example.com/terms"',
            f'terms_url = "https://example.com/terms"\nlogo_url = "{CSP_INJECTION}"',
        )
    )
    with pytest.raises(ManifestError, match="invalid manifest"):
        load_manifest_file(bad, default_catalog())
    assert main(["connectors", "check", str(bad)]) == 1
    assert "logo_url: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("authorize_url", "why"),
    [
        ("https://{tenant}/oauth/authorize", "may not be the whole host"),
        ("https://{tenant}:8443/oauth/authorize", "may not be the whole host"),
        ("https://x.{tenant}.com/oauth/authorize", "may only fill the first label"),
        ("https://{tenant}.{tenant}.example.com/", "only the first label of the host"),
        ("https://{tenant}.com/oauth/authorize", "at least two fixed labels"),
        ("https://{tenant}.10.0.0.1/oauth/authorize", "not a valid host name"),
        ("https://{tenant}.example.com;script-src/", "not a valid host name"),
        ("https://{client_id}.example.com/oauth/authorize", "may not stand in the host"),
        ("https://a{tenant}.example.com/", "whole label"),
    ],
)
def test_placeholder_host_shapes_are_refused(authorize_url: str, why: str, catalog) -> None:
    (problem,) = problems(with_tenant(authorize_url=authorize_url), catalog)
    assert problem.startswith(f"oauth.authorize_url: {authorize_url!r}") and why in problem


def test_a_host_entry_that_is_only_a_placeholder_is_refused(catalog: Catalog) -> None:
    raw = {**with_tenant(), "hosts": ["{tenant}"]}
    (problem,) = problems(raw, catalog)
    assert problem.startswith("hosts[0]:") and "may not be the whole host" in problem


@pytest.mark.parametrize(
    "authorize_url",
    [
        "https://{tenant}.zendesk.com/oauth/authorizations/new",
        "https://{tenant}.eu.example.com:8443/authorize",
        "http://{tenant}.localhost:8000/authorize",  # loopback, for tests
        "http://[::1]:8000/authorize",
        "https://198.51.100.7/authorize",
    ],
)
def test_good_hosts_load(authorize_url: str, catalog: Catalog) -> None:
    manifest = parse_manifest(with_tenant(authorize_url=authorize_url), catalog, source="test")
    assert manifest.oauth.authorize_url == authorize_url


# --- the value that fills a host placeholder ----------------------------------------

ZENDESK = "https://{tenant}.zendesk.com/oauth/authorizations/new"
BAD_VALUES = [
    "2852039166",  # 169.254.169.254 as an IPv4 number
    "0x7f000001",  # 127.0.0.1 in hex
    "0X7F000001",
    "0177",
    "localhost",
    "LocalHost",
    "acme.evil",  # dotted: more than one label
    "127.0.0.1",
    "[::1]",
    "::1",
    "",
    "-acme",
    "acme corp",
    "a" * 64,
]


@pytest.fixture(scope="module")
def tenant_manifest(catalog: Catalog) -> Manifest:
    return parse_manifest(with_tenant(authorize_url=ZENDESK), catalog, source="test")


@pytest.mark.parametrize("value", BAD_VALUES)
def test_a_host_value_that_is_not_one_harmless_label_is_refused(
    value: str, tenant_manifest: Manifest
) -> None:
    # the setting's own pattern (^.*$) admits everything: the host rule still applies
    with pytest.raises(InvalidInput) as info:
        tenant_manifest.validate_settings({"tenant": value})
    assert info.value.details["field"] == "settings.tenant"
    assert "cannot stand in a host name" in info.value.message
    with pytest.raises(InvalidSetting, match="not a valid host name label"):
        render_url(ZENDESK, {"tenant": value})


def test_a_path_value_is_not_held_to_the_host_rule(catalog: Catalog) -> None:
    raw = with_tenant()
    raw["actions"][0]["url"] = "https://api.example.com/{tenant}/messages"
    manifest = parse_manifest(raw, catalog, source="test")
    assert manifest.validate_settings({"tenant": "2852039166"}) == {"tenant": "2852039166"}


@pytest.mark.parametrize("value", ["acme", "Acme-2", "x1", "a" * 63, "xn--bcher-kva"])
def test_good_host_values(value: str, tenant_manifest: Manifest) -> None:
    assert tenant_manifest.validate_settings({"tenant": value}) == {"tenant": value}
    assert render_url(ZENDESK, {"tenant": value}).startswith(f"https://{value.lower()}.zendesk")


# --- origins and the CSP ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://CDN.Example.NET:443/logos/x.png", "https://cdn.example.net"),
        ("https://cdn.example.net:8443/x.png?y#z", "https://cdn.example.net:8443"),
        ("http://[0:0::1]:80/x", "http://[::1]"),
        ("http://127.0.0.1:8000/x", "http://127.0.0.1:8000"),
        (CSP_INJECTION, None),
        ("https://{tenant}.zendesk.com/x", None),
    ],
)
def test_origins_are_rebuilt_from_parsed_parts(url: str, expected: str | None) -> None:
    assert origin(url) == expected


def test_the_csp_carries_only_valid_origins(tenant_manifest: Manifest) -> None:
    csp = content_security_policy(
        images=["https://cdn.example.net", "https://x;script-src *", "'unsafe-inline'"],
        form_action=[authorize_origin(tenant_manifest, {"tenant": "acme"}), None],
    )
    assert "img-src 'self' https://cdn.example.net;" in csp
    assert "form-action 'self' https://acme.zendesk.com;" in csp
    assert "script-src" not in csp and "unsafe" not in csp and "{" not in csp
    # without the session's settings the template's origin is not rendered, so not used
    assert authorize_origin(tenant_manifest) is None
    assert authorize_origin(tenant_manifest, {"tenant": "2852039166"}) is None


def test_logo_origins(catalog: Catalog) -> None:
    manifest = parse_manifest(
        {**valid_raw(), "logo_url": "https://CDN.example.net/a.png"}, catalog, source="t"
    )
    assert logo_origins([manifest, manifest]) == ["https://cdn.example.net"]
