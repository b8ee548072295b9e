"""A connector's terms, their version, and what a change between two versions means.

A connector's *terms* are what a user agrees to when they connect it
(:func:`connector_terms`): its manifest's data declarations (category, purpose,
required or optional, data use), its OAuth scopes, its recipient hosts (the hosts of
its action URLs and ``hosts``), its privacy policy and terms URLs, the digests of the
last snapshots of those two pages (``None`` until one was retrieved), and the
platform's own policy version (``BROKER_POLICY_VERSION``). The :func:`terms_version`
is the SHA-256 of their canonical JSON (keys sorted, no whitespace, UTF-8).

:func:`compare_terms` lists what changed between two terms, each change classified
(issue 11): *significant* for a new category, a changed data use, a category that
became required, a changed purpose, a new recipient host, or policy/terms text that
changed by more than the threshold; *minor* for everything else (a removed category,
a category that became optional, removed hosts, scope or URL changes, a text change
under the threshold, a new platform policy version). A page retrieved for the first
time is no change. The operator can reclassify any change afterwards.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from broker.core.manifest import Manifest

__all__ = [
    "PAGES",
    "Classification",
    "TermsChange",
    "classification",
    "compare_terms",
    "connector_terms",
    "recipient_hosts",
    "terms_version",
]

Classification = Literal["significant", "minor"]
PAGES: tuple[str, ...] = ("privacy_policy", "terms")
"""The third party's pages the broker keeps snapshots of, by key."""

_NETLOC = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]+)")


@dataclass(frozen=True)
class TermsChange:
    """One difference between two terms, in plain words."""

    code: str  # category_added, use_changed, …
    significant: bool
    text: str
    subject: str | None = None  # the category, host, scope or page it is about

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "significant": self.significant}
        if self.subject is not None:
            out["subject"] = self.subject
        out["text"] = self.text
        return out


def recipient_hosts(manifest: Manifest) -> list[str]:
    """Where the connector sends data: its action URLs' hosts and ``hosts`` (templates
    as written, placeholders included), sorted, once each."""
    hosts = {m.group(1).lower() for a in manifest.actions if (m := _NETLOC.match(a.url))}
    hosts.update(h.lower() for h in manifest.hosts)
    return sorted(hosts)


def connector_terms(
    manifest: Manifest, *, digests: Mapping[str, str | None], platform_policy_version: str
) -> dict[str, Any]:
    """The terms of ``manifest`` with the given page digests (see the module docstring)."""
    return {
        "connector": manifest.id,
        "data": {
            d.category: {"purpose": d.purpose, "required": d.required, "use": d.use}
            for d in manifest.data
        },
        "scopes": sorted(set(manifest.oauth.scopes)),
        "recipients": recipient_hosts(manifest),
        "privacy_policy_url": manifest.privacy_policy_url,
        "terms_url": manifest.terms_url,
        "digests": {page: digests.get(page) for page in PAGES},
        "platform_policy_version": platform_policy_version,
    }


def terms_version(terms: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``terms``."""
    encoded = json.dumps(terms, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _data_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[TermsChange]:
    out: list[TermsChange] = []
    for category in sorted(set(after) - set(before)):
        kind = "required" if after[category]["required"] else "optional"
        out.append(TermsChange("category_added", True, f"new {kind} data: {category}", category))
    for category in sorted(set(before) - set(after)):
        out.append(
            TermsChange("category_removed", False, f"no longer receives {category}", category)
        )
    for category in sorted(set(before) & set(after)):
        old, new = before[category], after[category]
        if old["use"] != new["use"]:
            out.append(
                TermsChange(
                    "use_changed",
                    True,
                    f"{category} is now used for {new['use']} (was {old['use']})",
                    category,
                )
            )
        if old["purpose"] != new["purpose"]:
            out.append(
                TermsChange(
                    "purpose_changed",
                    True,
                    f"the purpose of {category} changed to: {new['purpose']}",
                    category,
                )
            )
        if old["required"] != new["required"]:
            required = bool(new["required"])
            out.append(
                TermsChange(
                    "became_required" if required else "became_optional",
                    required,
                    f"{category} is now {'required' if required else 'optional'}",
                    category,
                )
            )
    return out


def _set_changes(
    before: list[str], after: list[str], *, what: str, added_significant: bool
) -> list[TermsChange]:
    out = [
        TermsChange(f"{what}_added", added_significant, f"new {what}: {item}", item)
        for item in sorted(set(after) - set(before))
    ]
    out += [
        TermsChange(f"{what}_removed", False, f"{what} removed: {item}", item)
        for item in sorted(set(before) - set(after))
    ]
    return out


def compare_terms(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    *,
    text_ratios: Mapping[str, float | None],
    threshold: float,
) -> list[TermsChange]:
    """What changed from ``before`` to ``after``; ``text_ratios``: for each page whose
    digest changed, the share of its words that changed (``None``: the earlier text is
    not at hand, which counts as significant)."""
    changes = _data_changes(before["data"], after["data"])
    changes += _set_changes(
        before["recipients"], after["recipients"], what="recipient", added_significant=True
    )
    changes += _set_changes(
        before["scopes"], after["scopes"], what="scope", added_significant=False
    )
    for field, label in (("privacy_policy_url", "privacy policy"), ("terms_url", "terms")):
        if before[field] != after[field]:
            changes.append(
                TermsChange("url_changed", False, f"the {label} moved to {after[field]}", field)
            )
    for page, label in (("privacy_policy", "privacy policy"), ("terms", "terms")):
        old, new = before["digests"].get(page), after["digests"].get(page)
        if old is None or new is None or old == new:
            continue  # first retrieved (or not retrieved): not a change of the text
        ratio = text_ratios.get(page)
        significant = ratio is None or ratio > threshold
        share = "an unknown share" if ratio is None else f"{ratio:.1%}"
        changes.append(
            TermsChange("text_changed", significant, f"the {label} text changed ({share})", page)
        )
    if before["platform_policy_version"] != after["platform_policy_version"]:
        changes.append(
            TermsChange(
                "platform_policy_changed",
                False,
                f"the platform's policy version is now {after['platform_policy_version']} "
                f"(was {before['platform_policy_version']})",
            )
        )
    return changes


def classification(changes: list[TermsChange]) -> Classification:
    """``significant`` when any change is."""
    return "significant" if any(c.significant for c in changes) else "minor"
