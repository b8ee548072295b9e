"""The manifest's JSON Schema, generated from the manifest model.

It describes the shape pass of :func:`broker.core.manifest.parse_manifest` (fields,
types, lengths, patterns, unknown keys); the meaning pass (the catalog, URL rules,
``env:`` references, duplicates) is the broker's alone. Published as
``docs/manifest.schema.json`` (``scripts/manifest_schema`` writes it) so that
editors validate a ``manifest.toml`` while it is written, e.g. taplo with a
``#:schema`` comment on the file's first line.
"""

from __future__ import annotations

import json
from typing import Any

from broker.core.manifest import Manifest

__all__ = ["SCHEMA_DIALECT", "manifest_json_schema", "manifest_schema_text"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"  # what pydantic generates


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of a connector manifest, as a dict."""
    generated = Manifest.model_json_schema()
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "Connector manifest",
        "description": (
            "A connector's manifest.toml (docs/connectors.md#manifest-reference). "
            "Covers the shape only: `broker connectors check PATH` also checks the "
            "categories against the catalog, the URLs and the env: references."
        ),
        **{key: value for key, value in generated.items() if key != "title"},
    }


def manifest_schema_text() -> str:
    """The schema as the committed ``docs/manifest.schema.json`` holds it."""
    return json.dumps(manifest_json_schema(), indent=2, ensure_ascii=False) + "\n"
