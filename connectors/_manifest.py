"""Reading a connector package's ``manifest.toml`` (package data)."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

__all__ = ["packaged_manifest"]


def packaged_manifest(package: str) -> dict[str, Any]:
    """The ``manifest.toml`` beside a connector's code, as a dict (the broker
    validates it when it loads the connector)."""
    text = (resources.files(package) / "manifest.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)
