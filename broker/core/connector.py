"""The connector plugin interface: a manifest plus optional hooks.

A manifest-only connector (a TOML file) is a ``Connector`` with no hooks
overridden. A Python plugin subclasses ``Connector`` and is published in the
``broker.connectors`` entry-point group; the entry point names either the
subclass or an instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker.core.manifest import Manifest

__all__ = ["Connector", "ConnectorSource"]


@dataclass(frozen=True)
class ConnectorSource:
    """Where a connector came from: a manifest file or an installed distribution."""

    kind: str  # "file" | "entry_point" | "builtin"
    location: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}"


@dataclass
class Connector:
    manifest: Manifest
    source: ConnectorSource = field(default_factory=lambda: ConnectorSource("builtin", "?"))

    @property
    def id(self) -> str:
        return self.manifest.id

    def authorize_params(self) -> dict[str, str]:
        """Extra query parameters for the provider's authorize URL."""
        return dict(self.manifest.oauth.extra_authorize_params)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.manifest.id,
            "name": self.manifest.name,
            "source": str(self.source),
            "privacy_policy_url": self.manifest.privacy_policy_url,
            "terms_url": self.manifest.terms_url,
            "categories": [d.category for d in self.manifest.data],
        }
