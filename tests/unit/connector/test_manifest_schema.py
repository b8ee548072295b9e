"""docs/manifest.schema.json is what the manifest model generates now; it accepts every
manifest the broker ships (the four connectors, the demo's sandbox, the scaffold's and
the docs' example) and refuses badly shaped ones, as the broker's shape pass does."""

from __future__ import annotations

import json
import re
import runpy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from broker.cli.scaffold import scaffold
from broker.core.catalog import default_catalog
from broker.core.errors import ManifestError
from broker.core.manifest import parse_manifest
from broker.core.manifest_schema import manifest_json_schema
from broker.demo import sandbox_manifest

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_FILE = ROOT / "docs" / "manifest.schema.json"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_committed_schema_is_what_the_model_generates() -> None:
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == manifest_json_schema()
    script = runpy.run_path(str(ROOT / "scripts" / "manifest_schema"), run_name="script")
    assert script["main"](["--check"]) == 0


def test_schema_names_every_top_level_field_and_forbids_others() -> None:
    schema = manifest_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {
        "id",
        "name",
        "privacy_policy_url",
        "terms_url",
        "oauth",
        "data",
    }
    assert "delivery" in schema["properties"]


def shipped_manifests(tmp_path: Path) -> dict[str, dict[str, Any]]:
    found = {
        path.parent.name: tomllib.loads(path.read_text(encoding="utf-8"))
        for path in sorted((ROOT / "connectors").glob("*/manifest.toml"))
    }
    assert len(found) >= 4
    found["sandbox"] = sandbox_manifest("http://127.0.0.1:8000/sandbox")
    root = scaffold("acme-chat", tmp_path)
    found["scaffold"] = tomllib.loads((root / "acme_chat" / "manifest.toml").read_text("utf-8"))
    doc = (ROOT / "docs" / "connectors.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n# acme-chat\.toml\n(.*?)```", doc, re.DOTALL)
    assert example is not None
    found["docs example"] = tomllib.loads(example.group(1))
    return found


def test_every_shipped_manifest_is_valid(tmp_path: Path, validator: Draft202012Validator) -> None:
    for name, raw in shipped_manifests(tmp_path).items():
        errors = [e.message for e in validator.iter_errors(raw)]
        assert errors == [], name
        parse_manifest(raw, default_catalog(), source=name)  # and the broker agrees


def good() -> dict[str, Any]:
    return tomllib.loads((ROOT / "connectors" / "slack" / "manifest.toml").read_text("utf-8"))


def without(raw: dict[str, Any], key: str) -> dict[str, Any]:
    raw.pop(key)
    return raw


def changed(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    target: Any = raw
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[last] = value
    return raw


BAD = {
    "no oauth table": lambda: without(good(), "oauth"),
    "unknown top-level key": lambda: changed(good(), "colour", "blue"),
    "no data declared": lambda: changed(good(), "data", []),
    "unknown oauth key": lambda: changed(good(), "oauth.client_secret_value", "x"),
    "auth method not offered": lambda: changed(good(), "oauth.token_endpoint_auth_method", "jwt"),
    "purpose too short": lambda: changed(good(), "data.0.purpose", "ok"),
    "action name with capitals": lambda: changed(good(), "actions.0.name", "PostMessage"),
    "scopes as a string": lambda: changed(good(), "oauth.scopes", "chat:write"),
    "rate limit unit": lambda: changed(good(), "delivery", {"rate_limit": "10/week"}),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_badly_shaped_manifests_are_refused(case: str, validator: Draft202012Validator) -> None:
    raw = BAD[case]()
    assert list(validator.iter_errors(raw)), case
    with pytest.raises(ManifestError):  # the broker's shape pass refuses it too
        parse_manifest(raw, default_catalog(), source=case)


def test_scaffold_manifest_points_editors_at_the_schema(tmp_path: Path) -> None:
    package = scaffold("acme-chat", tmp_path) / "acme_chat"
    first = (package / "manifest.toml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "#:schema ./manifest.schema.json"
    written = json.loads((package / "manifest.schema.json").read_text(encoding="utf-8"))
    assert written == manifest_json_schema()


# JSON Schema Draft 4's keywords (what taplo validates), plus 2020-12's "$defs" whose
# members "$ref" reaches by JSON pointer either way.
DRAFT4 = frozenset(
    {
        "$schema", "$ref", "$defs", "id", "title", "description", "default", "multipleOf",
        "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength",
        "minLength", "pattern", "additionalItems", "items", "maxItems", "minItems",
        "uniqueItems", "maxProperties", "minProperties", "required", "additionalProperties",
        "definitions", "properties", "patternProperties", "dependencies", "enum", "type",
        "allOf", "anyOf", "oneOf", "not", "format",
    }
)  # fmt: skip


def keywords(schema: Any) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions", "patternProperties"):
            for sub in value.values():
                found |= keywords(sub)
        elif key in ("items", "additionalProperties", "not"):
            found |= keywords(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            for sub in value:
                found |= keywords(sub)
    return found


def test_schema_keeps_to_what_taplo_understands() -> None:
    used = keywords(manifest_json_schema())
    assert {"properties", "$ref", "pattern"} <= used  # the walk reached nested schemas
    assert used <= DRAFT4, sorted(used - DRAFT4)
