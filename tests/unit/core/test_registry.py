"""Connector discovery, fed with fake entry points and temporary manifest directories."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from broker.core.catalog import Catalog, default_catalog
from broker.core.connector import Connector, ConnectorSource
from broker.core.errors import NotFound
from broker.core.manifest import Manifest, parse_manifest
from broker.core.registry import ENTRY_POINT_GROUP, ConnectorRegistry, load_registry

MODULE = __name__


def manifest_dict(connector_id: str, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": connector_id,
        "name": f"{connector_id.title()} Co.",
        "privacy_policy_url": f"https://{connector_id}.example.com/privacy",
        "terms_url": f"https://{connector_id}.example.com/terms",
        "oauth": {
            "authorize_url": f"https://{connector_id}.example.com/oauth/authorize",
            "token_url": f"https://{connector_id}.example.com/oauth/token",
            "client_id": "env:EXAMPLE_CLIENT_ID",
            "client_secret": "env:EXAMPLE_CLIENT_SECRET",
        },
        "data": [{"category": "user.name", "purpose": "Show who made the change"}],
    }
    raw.update(changes)
    return raw


def manifest_toml(connector_id: str, terms_url: str | None = None) -> str:
    terms = terms_url or f"https://{connector_id}.example.com/terms"
    return f"""\
id = "{connector_id}"
name = "{connector_id} Co."
privacy_policy_url = "https://{connector_id}.example.com/privacy"
terms_url = "{terms}"

[oauth]
authorize_url = "https://{connector_id}.example.com/oauth/authorize"
token_url = "https://{connector_id}.example.com/oauth/token"
client_id = "env:EXAMPLE_CLIENT_ID"
client_secret = "env:EXAMPLE_CLIENT_SECRET"

[[data]]
category = "user.name"
purpose = "Show who made the change"
"""


# --- objects the fake entry points point at -----------------------------------------


class ClassPlugin(Connector):
    MANIFEST = manifest_dict("classy")

    def authorize_params(self) -> dict[str, str]:
        return {"prompt": "consent"}


class PrebuiltManifestPlugin(Connector):
    MANIFEST = Manifest.model_validate(manifest_dict("prebuilt"))


# Passes the shape check but not the meaning check (http, inline secret, unknown category).
_BAD_BUT_WELL_SHAPED = manifest_dict(
    "sneaky",
    privacy_policy_url="http://sneaky.example.com/privacy",
    data=[{"category": "user.shoe_size", "purpose": "Because we can"}],
)
_BAD_BUT_WELL_SHAPED["oauth"] = {**_BAD_BUT_WELL_SHAPED["oauth"], "client_secret": "hunter2"}


class SneakyPrebuiltPlugin(Connector):
    MANIFEST = Manifest.model_validate(_BAD_BUT_WELL_SHAPED)


class NoManifestPlugin(Connector):
    pass


class GarbageManifestPlugin(Connector):
    MANIFEST = "not a manifest"


class ExplodingPlugin(Connector):
    MANIFEST = manifest_dict("exploding")

    def __init__(self, **kwargs: Any) -> None:
        raise RuntimeError("plugin constructor failed")


INSTANCE_PLUGIN = Connector(Manifest.model_validate(manifest_dict("instance")))
SNEAKY_INSTANCE = Connector(Manifest.model_validate(_BAD_BUT_WELL_SHAPED))
DICT_PLUGIN = manifest_dict("dicty")
INVALID_DICT_PLUGIN = manifest_dict("invalid", terms_url="http://invalid.example.com/terms")
DUPLICATE_DICT_PLUGIN = manifest_dict("dicty", name="Second Dicty")
NOT_A_PLUGIN = 42


def ep(attr: str, name: str | None = None, module: str = MODULE) -> EntryPoint:
    return EntryPoint(name or attr.lower(), f"{module}:{attr}", ENTRY_POINT_GROUP)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return default_catalog()


def builtin(connector_id: str, catalog: Catalog) -> Connector:
    m = parse_manifest(manifest_dict(connector_id), catalog, source="builtin")
    return Connector(m, ConnectorSource("builtin", "tests"))


# --- entry points -------------------------------------------------------------------


def test_connector_subclass_with_manifest_dict(catalog: Catalog) -> None:
    reg = load_registry(catalog, plugins=[ep("ClassPlugin")])
    assert reg.problems == []
    conn = reg.get("classy")
    assert type(conn) is ClassPlugin, "the subclass itself must be instantiated (hooks kept)"
    assert conn.authorize_params() == {"prompt": "consent"}
    assert conn.source.kind == "entry_point"
    assert f"{MODULE}:ClassPlugin" in conn.source.location
    assert "classplugin" in conn.source.location


def test_connector_subclass_with_prebuilt_manifest(catalog: Catalog) -> None:
    reg = load_registry(catalog, plugins=[ep("PrebuiltManifestPlugin")])
    assert reg.problems == []
    assert isinstance(reg.get("prebuilt"), PrebuiltManifestPlugin)


def test_prebuilt_manifest_still_gets_the_meaning_check(catalog: Catalog) -> None:
    """A Manifest built with model_validate skipped the meaning pass; the loader runs it."""
    reg = load_registry(catalog, plugins=[ep("SneakyPrebuiltPlugin")])
    assert "sneaky" not in reg
    (problem,) = reg.problems
    assert "SneakyPrebuiltPlugin" in problem.source
    fields = {p.split(":", 1)[0] for p in problem.problems}
    assert fields == {"privacy_policy_url", "oauth.client_secret", "data[0].category"}


def test_connector_instance(catalog: Catalog) -> None:
    reg = load_registry(catalog, plugins=[ep("INSTANCE_PLUGIN", name="inst")])
    assert reg.problems == []
    conn = reg.get("instance")
    assert conn is INSTANCE_PLUGIN
    assert conn.source.kind == "entry_point"
    assert "inst" in conn.source.location


def test_connector_instance_gets_the_meaning_check(catalog: Catalog) -> None:
    reg = load_registry(catalog, plugins=[ep("SNEAKY_INSTANCE")])
    assert reg.connectors == {}
    (problem,) = reg.problems
    assert "SNEAKY_INSTANCE" in problem.source
    assert any(p.startswith("oauth.client_secret:") for p in problem.problems)


def test_manifest_dict(catalog: Catalog) -> None:
    reg = load_registry(catalog, plugins=[ep("DICT_PLUGIN")])
    assert reg.problems == []
    conn = reg.get("dicty")
    assert type(conn) is Connector
    assert conn.manifest.name == "Dicty Co."


def test_broken_import_is_a_problem_not_a_crash(catalog: Catalog) -> None:
    broken = EntryPoint("broken", "tests.unit.no_such_module_here:Plugin", ENTRY_POINT_GROUP)
    missing_attr = ep("DOES_NOT_EXIST")
    reg = load_registry(catalog, plugins=[broken, missing_attr, ep("DICT_PLUGIN")])
    assert list(reg.connectors) == ["dicty"], "the good plugin still loads"
    assert len(reg.problems) == 2
    first, second = reg.problems
    assert "cannot load plugin" in first.message
    assert "ModuleNotFoundError" in first.message
    assert "no_such_module_here" in first.source
    assert "AttributeError" in second.message
    assert "DOES_NOT_EXIST" in second.source


def test_invalid_manifest_dict_is_refused_with_its_problems(catalog: Catalog) -> None:
    reg = load_registry(catalog, plugins=[ep("INVALID_DICT_PLUGIN"), ep("DICT_PLUGIN")])
    assert list(reg.connectors) == ["dicty"]
    (problem,) = reg.problems
    assert "INVALID_DICT_PLUGIN" in problem.source
    assert "INVALID_DICT_PLUGIN" in problem.message
    assert problem.problems == (
        "terms_url: 'http://invalid.example.com/terms' uses http; only https is allowed "
        "except for loopback hosts",
    )


def test_class_without_manifest(catalog: Catalog) -> None:
    reg = load_registry(catalog, plugins=[ep("NoManifestPlugin")])
    assert reg.connectors == {}
    (problem,) = reg.problems
    assert "no MANIFEST" in problem.message
    assert problem.problems == ("MANIFEST: is required",)


@pytest.mark.parametrize("attr", ["GarbageManifestPlugin", "ExplodingPlugin"])
def test_plugin_code_that_fails_does_not_break_the_others(catalog: Catalog, attr: str) -> None:
    reg = load_registry(catalog, plugins=[ep(attr), ep("DICT_PLUGIN")])
    assert list(reg.connectors) == ["dicty"]
    (problem,) = reg.problems
    assert attr in problem.source
    assert "cannot build connector" in problem.message


def test_entry_point_to_something_else(catalog: Catalog) -> None:
    reg = load_registry(catalog, plugins=[ep("NOT_A_PLUGIN")])
    assert reg.connectors == {}
    (problem,) = reg.problems
    assert "must name a Connector subclass, instance or manifest dict" in problem.message


def test_source_records_unknown_distribution_for_handmade_entry_points(catalog: Catalog) -> None:
    reg = load_registry(catalog, plugins=[ep("DICT_PLUGIN", name="dicty-ep")])
    assert str(reg.get("dicty").source) == (f"entry_point:? (dicty-ep = {MODULE}:DICT_PLUGIN)")


def test_duplicate_entry_point_id_first_wins_and_both_sources_named(catalog: Catalog) -> None:
    reg = load_registry(
        catalog, plugins=[ep("DICT_PLUGIN", name="first"), ep("DUPLICATE_DICT_PLUGIN")]
    )
    assert reg.get("dicty").manifest.name == "Dicty Co.", "the first one wins"
    (problem,) = reg.problems
    assert "duplicate connector id 'dicty'" in problem.message
    assert "DUPLICATE_DICT_PLUGIN" in problem.source
    assert f"{MODULE}:DICT_PLUGIN" in problem.message, "names the one already registered"
    assert "ignored" in problem.message


def test_default_plugins_come_from_the_entry_point_group(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        calls.append(group)
        return [ep("DICT_PLUGIN")]

    monkeypatch.setattr("broker.core.registry.entry_points", fake_entry_points)
    reg = load_registry(catalog)
    assert calls == [ENTRY_POINT_GROUP]
    assert "dicty" in reg


def test_empty_plugins_means_none(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(**kwargs: Any) -> list[EntryPoint]:
        raise AssertionError("installed entry points must not be consulted")

    monkeypatch.setattr("broker.core.registry.entry_points", boom)
    assert load_registry(catalog, plugins=[]).connectors == {}


# --- directories --------------------------------------------------------------------


def test_directory_of_manifests(tmp_path: Path, catalog: Catalog) -> None:
    (tmp_path / "b.toml").write_text(manifest_toml("bravo"))
    (tmp_path / "a.toml").write_text(manifest_toml("alpha"))
    (tmp_path / "notes.txt").write_text("not a manifest")
    reg = load_registry(catalog, directories=[tmp_path], plugins=[])
    assert reg.problems == []
    assert [c.id for c in reg.all()] == ["alpha", "bravo"]
    alpha = reg.get("alpha")
    assert alpha.source == ConnectorSource("file", str(tmp_path / "a.toml"))


def test_bad_toml_among_good_ones(tmp_path: Path, catalog: Catalog) -> None:
    (tmp_path / "a.toml").write_text(manifest_toml("alpha"))
    (tmp_path / "b.toml").write_text("id = \n")
    (tmp_path / "c.toml").write_text(manifest_toml("charlie", terms_url="http://x.com/t"))
    (tmp_path / "d.toml").write_text(manifest_toml("delta"))
    reg = load_registry(catalog, directories=[tmp_path], plugins=[])
    assert sorted(reg.connectors) == ["alpha", "delta"]
    by_source = {Path(p.source).name: p for p in reg.problems}
    assert set(by_source) == {"b.toml", "c.toml"}
    assert "not valid TOML" in by_source["b.toml"].message
    assert by_source["b.toml"].problems[0].startswith("(file): ")
    assert by_source["c.toml"].problems == (
        "terms_url: 'http://x.com/t' uses http; only https is allowed except for loopback hosts",
    )


def test_missing_directory_is_a_problem(tmp_path: Path, catalog: Catalog) -> None:
    missing = tmp_path / "nope"
    (tmp_path / "a.toml").write_text(manifest_toml("alpha"))
    reg = load_registry(catalog, directories=[missing, tmp_path], plugins=[])
    assert "alpha" in reg
    (problem,) = reg.problems
    assert problem.source == str(missing)
    assert "does not exist" in problem.message


def test_duplicate_across_files_first_sorted_wins(tmp_path: Path, catalog: Catalog) -> None:
    (tmp_path / "2-second.toml").write_text(manifest_toml("alpha").replace("alpha Co.", "Two"))
    (tmp_path / "1-first.toml").write_text(manifest_toml("alpha").replace("alpha Co.", "One"))
    reg = load_registry(catalog, directories=[tmp_path], plugins=[])
    assert reg.get("alpha").manifest.name == "One"
    (problem,) = reg.problems
    assert problem.source == f"file:{tmp_path / '2-second.toml'}"
    assert f"file:{tmp_path / '1-first.toml'}" in problem.message


def test_order_builtins_then_files_then_plugins(tmp_path: Path, catalog: Catalog) -> None:
    (tmp_path / "dicty.toml").write_text(manifest_toml("dicty").replace("dicty Co.", "File"))
    (tmp_path / "b.toml").write_text(manifest_toml("bravo"))
    reg = load_registry(
        catalog,
        directories=[tmp_path],
        builtins=[builtin("bravo", catalog)],
        plugins=[ep("DICT_PLUGIN")],
    )
    assert reg.get("bravo").source.kind == "builtin"
    assert reg.get("dicty").manifest.name == "File"
    sources = sorted(p.source for p in reg.problems)
    assert sources == sorted(
        [f"file:{tmp_path / 'b.toml'}", f"entry_point:? (dict_plugin = {MODULE}:DICT_PLUGIN)"]
    )
    for p in reg.problems:
        assert "duplicate connector id" in p.message
        assert "already provided by" in p.message


# --- the registry object ------------------------------------------------------------


def test_get_unknown_is_not_found(catalog: Catalog) -> None:
    reg = ConnectorRegistry()
    reg.add(builtin("alpha", catalog))
    assert "alpha" in reg
    assert "beta" not in reg
    with pytest.raises(NotFound) as info:
        reg.get("beta")
    assert info.value.details == {"connector": "beta"}


def test_all_is_sorted_by_id(catalog: Catalog) -> None:
    reg = load_registry(
        catalog, builtins=[builtin("zulu", catalog), builtin("alpha", catalog)], plugins=[]
    )
    assert [c.id for c in reg.all()] == ["alpha", "zulu"]


def test_summary_shows_policy_links_and_categories(catalog: Catalog) -> None:
    summary = builtin("alpha", catalog).summary()
    assert summary == {
        "id": "alpha",
        "name": "Alpha Co.",
        "source": "builtin:tests",
        "privacy_policy_url": "https://alpha.example.com/privacy",
        "terms_url": "https://alpha.example.com/terms",
        "categories": ["user.name"],
    }
