"""A connector's terms, their version, and the classification of a change."""

from __future__ import annotations

import copy
from typing import Any

from broker.core.catalog import default_catalog
from broker.core.manifest import Manifest, parse_manifest
from broker.core.terms import (
    classification,
    compare_terms,
    connector_terms,
    recipient_hosts,
    terms_version,
)
from broker.demo import sandbox_manifest

DIGESTS = {"privacy_policy": "a" * 64, "terms": "b" * 64}


def manifest(change=None) -> Manifest:
    raw: dict[str, Any] = copy.deepcopy(sandbox_manifest("https://sandbox.example"))
    if change is not None:
        change(raw)
    return parse_manifest(raw, default_catalog(), source="test")


def terms(m: Manifest | None = None, digests=DIGESTS, version: str = "1") -> dict[str, Any]:
    return connector_terms(m or manifest(), digests=digests, platform_policy_version=version)


def compare(before, after, ratios=None, threshold=0.02):
    return compare_terms(before, after, text_ratios=ratios or {}, threshold=threshold)


def codes(changes) -> list[tuple[str, bool]]:
    return [(c.code, c.significant) for c in changes]


def test_terms_hold_what_the_user_agrees_to() -> None:
    t = terms()
    assert t["connector"] == "sandbox"
    assert t["data"]["user.name"] == {
        "purpose": "Show who made the change",
        "required": False,
        "use": "functional.service",
    }
    assert t["scopes"] == ["messages:write", "profile"]
    assert t["recipients"] == ["sandbox.example"]
    assert t["privacy_policy_url"] == "https://sandbox.example/privacy"
    assert t["digests"] == DIGESTS
    assert t["platform_policy_version"] == "1"


def test_version_is_stable_and_changes_with_any_part() -> None:
    assert terms_version(terms()) == terms_version(terms())
    assert len(terms_version(terms())) == 64
    others = {
        terms_version(terms(version="2")),
        terms_version(terms(digests={**DIGESTS, "terms": "c" * 64})),
        terms_version(terms(manifest(lambda r: r["oauth"]["scopes"].append("admin")))),
        terms_version(terms(manifest(lambda r: r["data"][1].update(required=True)))),
    }
    assert terms_version(terms()) not in others and len(others) == 4


def test_recipient_hosts_include_action_hosts_and_declared_hosts() -> None:
    def add_host(raw: dict[str, Any]) -> None:
        raw["hosts"] = ["files.sandbox.example"]

    assert recipient_hosts(manifest(add_host)) == ["files.sandbox.example", "sandbox.example"]


def test_identical_terms_have_no_change() -> None:
    assert compare(terms(), terms()) == []


def test_first_retrieval_of_a_page_is_no_change() -> None:
    before = terms(digests={"privacy_policy": None, "terms": None})
    assert compare(before, terms()) == []


def test_a_required_category_added_is_significant() -> None:
    def add(raw: dict[str, Any]) -> None:
        raw["data"].append({"category": "user.contact.phone_number", "purpose": "Call you"})

    changes = compare(terms(), terms(manifest(add)))
    assert codes(changes) == [("category_added", True)]
    assert "new required data: user.contact.phone_number" in changes[0].text
    assert classification(changes) == "significant"


def test_an_optional_category_removed_is_minor() -> None:
    def drop(raw: dict[str, Any]) -> None:
        raw["data"] = [d for d in raw["data"] if d["category"] != "user.contact.email"]

    changes = compare(terms(), terms(manifest(drop)))
    assert codes(changes) == [("category_removed", False)]
    assert classification(changes) == "minor"


def test_purpose_use_and_required_changes() -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["data"][1].update(purpose="Profile you for ads", required=True)
        raw["data"][2].update(use="marketing.advertising")

    changes = compare(terms(), terms(manifest(edit)))
    assert sorted(codes(changes)) == [
        ("became_required", True),
        ("purpose_changed", True),
        ("use_changed", True),
    ]
    relaxed = compare(terms(manifest(lambda r: r["data"][1].update(required=True))), terms())
    assert codes(relaxed) == [("became_optional", False)]


def test_new_recipient_host_is_significant_scope_and_url_changes_minor() -> None:
    def elsewhere(raw: dict[str, Any]) -> None:
        raw["actions"][0]["url"] = "https://collector.example/api/post"
        raw["oauth"]["scopes"].append("admin")
        raw["terms_url"] = "https://sandbox.example/terms-2026"

    changes = compare(terms(), terms(manifest(elsewhere)))
    assert sorted(codes(changes)) == [
        ("recipient_added", True),
        ("recipient_removed", False),
        ("scope_added", False),
        ("url_changed", False),
    ]


def test_text_changes_follow_the_threshold() -> None:
    after = terms(digests={**DIGESTS, "privacy_policy": "c" * 64})
    small = compare(terms(), after, {"privacy_policy": 0.005})
    assert codes(small) == [("text_changed", False)] and "0.5%" in small[0].text
    big = compare(terms(), after, {"privacy_policy": 0.3})
    assert codes(big) == [("text_changed", True)]
    assert codes(compare(terms(), after, {"privacy_policy": 0.3}, threshold=0.5)) == [
        ("text_changed", False)
    ]
    unknown = compare(terms(), after, {"privacy_policy": None})
    assert codes(unknown) == [("text_changed", True)]


def test_platform_policy_version_bump_is_minor() -> None:
    changes = compare(terms(), terms(version="2"))
    assert codes(changes) == [("platform_policy_changed", False)]
    assert "now 2 (was 1)" in changes[0].text
