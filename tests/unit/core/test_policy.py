"""Data uses (fideslang keys) and the operator's forbidden-use policy."""

from __future__ import annotations

import pytest

from broker.core.catalog import default_catalog
from broker.core.errors import ConfigurationError, ManifestError
from broker.core.manifest import parse_manifest
from broker.core.policy import DEFAULT_USE, data_uses, is_data_use, load_policy

MANIFEST = {
    "id": "example",
    "name": "Example",
    "privacy_policy_url": "https://example.com/privacy",
    "terms_url": "https://example.com/terms",
    "oauth": {
        "authorize_url": "https://example.com/authorize",
        "token_url": "https://example.com/token",
        "client_id": "env:X_ID",
        "client_secret": "env:X_SECRET",
    },
    "data": [{"category": "user.name", "purpose": "Show who made the change"}],
}


def test_the_shipped_uses_are_fideslang_keys_plus_a_sale_extension() -> None:
    uses = data_uses()
    for key in (
        "essential.service",
        "functional.service",
        "marketing.advertising.third_party",
        "marketing.advertising.third_party.targeted",
        "third_party_sharing.legal_obligation",
    ):
        assert key in uses
    assert "third_party_sharing.sale" in uses
    # every key's parent is a key too: the taxonomy is a tree
    for key in uses:
        parent = key.rpartition(".")[0]
        assert not parent or parent in uses, key


def test_default_policy_forbids_sale_and_third_party_advertising() -> None:
    policy = load_policy(None)
    assert policy.forbids("third_party_sharing.sale") == "third_party_sharing.sale"
    assert policy.forbids("marketing.advertising.third_party") is not None
    # a use covers the uses below it
    assert policy.forbids("marketing.advertising.third_party.targeted") == (
        "marketing.advertising.third_party"
    )
    for allowed in (DEFAULT_USE, "essential.service", "marketing.advertising.first_party"):
        assert policy.forbids(allowed) is None
    assert policy.forbidden_in([DEFAULT_USE, "third_party_sharing.sale"]) == {
        "third_party_sharing.sale": "third_party_sharing.sale"
    }


def test_operator_policy_file(tmp_path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('forbidden_uses = ["analytics"]\n')
    policy = load_policy(path)
    assert policy.forbids("analytics.reporting.ad_performance") == "analytics"
    assert policy.forbids("third_party_sharing.sale") is None
    path.write_text('forbidden_uses = ["selling"]\nextra = 1\n')
    with pytest.raises(ConfigurationError) as exc:
        load_policy(path)
    assert exc.value.details["problems"] == [
        "unknown key 'extra'",
        "forbidden_uses: 'selling' is not a known data use",
    ]
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_policy(tmp_path / "missing.toml")


def test_manifest_use_defaults_and_is_validated() -> None:
    manifest = parse_manifest(MANIFEST, default_catalog(), source="t")
    assert manifest.data[0].use == DEFAULT_USE and is_data_use(DEFAULT_USE)
    raw = {
        **MANIFEST,
        "data": [{**MANIFEST["data"][0], "use": "marketing.advertising.third_party"}],
    }
    assert parse_manifest(raw, default_catalog(), source="t").data[0].use.endswith("third_party")
    raw = {**MANIFEST, "data": [{**MANIFEST["data"][0], "use": "resale"}]}
    with pytest.raises(ManifestError) as exc:
        parse_manifest(raw, default_catalog(), source="t")
    assert "data[0].use: 'resale' is not a known data use" in exc.value.details["problems"]
