"""The connectors this distribution publishes, loaded the way the broker loads plugins."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from broker.core.catalog import default_catalog
from broker.core.registry import ENTRY_POINT_GROUP, load_registry

REAL = {"slack", "github", "zendesk", "google-calendar"}


def test_the_four_connectors_are_published_and_load_cleanly() -> None:
    ours = [
        ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value.startswith("connectors.")
    ]
    registry = load_registry(default_catalog(), plugins=ours)
    assert registry.problems == []
    assert set(registry.connectors) == REAL
    for connector in registry.all():
        assert connector.has_deliver_hook, connector.id
        assert connector.source.kind == "entry_point"
        assert "scoped-broker" in connector.source.location, "names the distribution"
        assert connector.manifest.oauth.client_id.startswith("env:")


@pytest.mark.parametrize("connector_id", sorted(REAL))
def test_each_declares_https_policy_links_and_purposes(connector_id: str) -> None:
    ours = [
        ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value.startswith("connectors.")
    ]
    manifest = load_registry(default_catalog(), plugins=ours).get(connector_id).manifest
    assert manifest.privacy_policy_url.startswith("https://")
    assert manifest.terms_url.startswith("https://")
    assert manifest.description
    assert all(len(d.purpose) > 20 for d in manifest.data)


def test_a_duplicate_of_a_published_connector_is_refused_naming_both_distributions() -> None:
    ours = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "slack"]
    registry = load_registry(default_catalog(), plugins=[*ours, *ours])
    (problem,) = registry.problems
    assert "duplicate connector id 'slack'" in problem.message
    assert "scoped-broker" in problem.source and "scoped-broker" in problem.message
