"""``broker.connector`` is the SDK's one public module: exactly these names, each the
broker's own object, and the shipped connectors and the scaffold import only from it."""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

import broker.connector
from broker.cli.scaffold import scaffold
from broker.connector import packaged_manifest
from broker.core import connector as core_connector
from broker.core import errors, manifest

ROOT = Path(__file__).resolve().parents[3]
PUBLIC = {
    "BoundAction": core_connector.BoundAction,
    "Connector": core_connector.Connector,
    "DeliveryRejected": errors.DeliveryRejected,
    "DeliveryResult": core_connector.DeliveryResult,
    "InvalidInput": errors.InvalidInput,
    "Manifest": manifest.Manifest,
    "TokenRejected": errors.TokenRejected,
    "packaged_manifest": core_connector.packaged_manifest,
    "provider_message": core_connector.provider_message,
    "response_id": core_connector.response_id,
}


def test_all_is_exactly_the_public_api_sorted() -> None:
    assert broker.connector.__all__ == sorted(PUBLIC)


def test_every_public_name_is_the_brokers_own_object() -> None:
    module = importlib.import_module("broker.connector")
    for name, obj in PUBLIC.items():
        assert getattr(module, name) is obj, name


def test_nothing_else_public_leaks_from_the_module() -> None:
    # (pytest's assertion rewriting adds "@py_builtins" and "@pytest_ar" to the modules of
    # an installed distribution that carries a pytest plugin, as this one does)
    public = {n for n in vars(broker.connector) if n[0] not in "_@" and n != "annotations"}
    assert public == set(PUBLIC)


def test_packaged_manifest_reads_the_toml_beside_the_code() -> None:
    raw = packaged_manifest("connectors.slack")
    assert raw["id"] == "slack"
    assert raw["oauth"]["authorize_url"].startswith("https://slack.com/")


def test_py_typed_is_shipped_as_package_data() -> None:
    assert (ROOT / "broker" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["broker"]


def broker_imports(source: str) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return {m for m in modules if m == "broker" or m.startswith(("broker.", "connectors."))}


def test_shipped_connectors_import_only_the_facade() -> None:
    files = sorted((ROOT / "connectors").glob("*/connector.py"))
    assert len(files) >= 4
    for path in files:
        assert broker_imports(path.read_text(encoding="utf-8")) == {"broker.connector"}, path


def test_nothing_under_connectors_reaches_past_the_facade_and_the_test_kit() -> None:
    # the shipped connectors' tests are what a connector author copies: they too see
    # only broker.connector and broker.testing, never the broker's store or flows
    files = sorted((ROOT / "connectors").rglob("*.py"))
    assert any(path.parent.name == "tests" for path in files)
    for path in files:
        used = {
            m for m in broker_imports(path.read_text(encoding="utf-8")) if m.startswith("broker")
        }
        assert not {m for m in used if m.startswith(("broker.store", "broker.flows"))}, path
        assert used <= {"broker.connector", "broker.testing"}, path


def test_scaffolded_connector_imports_only_the_facade(tmp_path: Path) -> None:
    root = scaffold("acme-chat", tmp_path)
    source = (root / "acme_chat" / "connector.py").read_text(encoding="utf-8")
    assert broker_imports(source) == {"broker.connector"}
