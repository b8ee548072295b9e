"""docs/connectors.md's manifest reference cannot drift from the manifest model:
every field documented, nothing documented that does not exist, required and default
columns true."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from broker.core.manifest import (
    Action,
    DataDeclaration,
    DeliverySettings,
    Manifest,
    OAuthSettings,
    Setting,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "connectors.md"
SECTIONS: dict[str, type[BaseModel]] = {
    "### Top level": Manifest,
    "### `[oauth]`": OAuthSettings,
    "### `[[data]]`": DataDeclaration,
    "### `[[actions]]`": Action,
    "### `[[settings]]`": Setting,
    "### `[delivery]`": DeliverySettings,
}
ROW = re.compile(r"^\| `(\w+)` \| ([^|]+) \| (yes|no) \|([^|]*)\|")


def table(heading: str) -> dict[str, tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    start = next(i for i, line in enumerate(text.splitlines()) if line.startswith(heading))
    rows: dict[str, tuple[str, str]] = {}
    for line in text.splitlines()[start + 1 :]:
        if line.startswith("#"):
            break
        if m := ROW.match(line):
            rows[m.group(1)] = (m.group(3), m.group(4).strip())
    assert rows, f"no table under {heading!r}"
    return rows


def documented_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, BaseModel):  # a table whose every field has its default
        return "`{}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list):
        return "`[]`" if not value else f"`{list(value)}`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_reference_table_matches_the_model(heading: str) -> None:
    model = SECTIONS[heading]
    rows = table(heading)
    assert list(rows) == list(model.model_fields), "same fields, in the model's order"
    for name, info in model.model_fields.items():
        required, default = rows[name]
        assert required == ("yes" if info.is_required() else "no"), name
        if info.is_required():
            assert default == "", f"{name}: a required field has no default"
            continue
        value = info.default if info.default is not PydanticUndefined else info.default_factory()
        assert default == documented_default(value), f"{heading} {name}: {default!r} vs {value!r}"


def test_the_guide_names_every_hook_of_the_plugin_api() -> None:
    text = DOC.read_text(encoding="utf-8")
    for hook in ("authorize_params", "check_connection", "deliver", "retry_delay", "before_revoke"):
        assert f"`{hook}(" in text, hook
