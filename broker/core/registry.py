"""Connector discovery: manifest-only TOML files and installed plugins.

Sources, in order: built-in connectors handed in by the caller, TOML files in
each ``BROKER_CONNECTORS_PATH`` directory (sorted by name), and the
``broker.connectors`` entry-point group. A connector that fails validation,
overrides a hook with the wrong parameters or repeats an id already taken is
refused; the refusal is kept in ``ConnectorRegistry.problems`` (naming the file
or distribution) so that ``broker connectors list`` can show it, and the others
keep working.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from broker.core.catalog import Catalog
from broker.core.connector import Connector, ConnectorSource, check_hook_signatures
from broker.core.errors import ManifestError, NotFound
from broker.core.manifest import Manifest, load_manifest_file, parse_manifest
from broker.core.policy import Policy

__all__ = [
    "ENTRY_POINT_GROUP",
    "ConnectorRegistry",
    "RegistryProblem",
    "forbidden_use_problems",
    "load_registry",
    "refuse_forbidden_uses",
]

ENTRY_POINT_GROUP = "broker.connectors"


@dataclass(frozen=True)
class RegistryProblem:
    source: str
    message: str
    problems: tuple[str, ...] = ()


@dataclass
class ConnectorRegistry:
    connectors: dict[str, Connector] = field(default_factory=dict)
    problems: list[RegistryProblem] = field(default_factory=list)

    def add(self, connector: Connector) -> None:
        existing = self.connectors.get(connector.id)
        if existing is not None:
            self.problems.append(
                RegistryProblem(
                    str(connector.source),
                    f"duplicate connector id {connector.id!r}: already provided by "
                    f"{existing.source}; this one is ignored",
                )
            )
            return
        self.connectors[connector.id] = connector

    def get(self, connector_id: str) -> Connector:
        try:
            return self.connectors[connector_id]
        except KeyError:
            raise NotFound(
                f"unknown connector {connector_id!r}", details={"connector": connector_id}
            ) from None

    def __contains__(self, connector_id: object) -> bool:
        return connector_id in self.connectors

    def all(self) -> list[Connector]:
        return sorted(self.connectors.values(), key=lambda c: c.id)


def _from_entry_point(ep: EntryPoint, catalog: Catalog) -> Connector:
    dist = ep.dist.name if ep.dist is not None else "?"
    source = ConnectorSource("entry_point", f"{dist} ({ep.name} = {ep.value})")
    try:
        obj = ep.load()
    except Exception as exc:  # a broken plugin must not break the others
        raise ManifestError(
            f"{source}: cannot load plugin: {type(exc).__name__}: {exc}",
            details={"source": str(source), "problems": []},
        ) from None
    try:
        return _connector_from(obj, source, catalog)
    except ManifestError:
        raise
    except Exception as exc:  # plugin code (a constructor, a bad MANIFEST) failed
        raise ManifestError(
            f"{source}: cannot build connector: {type(exc).__name__}: {exc}",
            details={"source": str(source), "problems": []},
        ) from None


def _connector_from(obj: object, source: ConnectorSource, catalog: Catalog) -> Connector:
    if isinstance(obj, type) and issubclass(obj, Connector):
        manifest = getattr(obj, "MANIFEST", None)
        if manifest is None:
            raise ManifestError(
                f"{source}: connector class has no MANIFEST",
                details={"source": str(source), "problems": ["MANIFEST: is required"]},
            )
        check_hook_signatures(obj, str(source))
        # A ready-made Manifest passed only the shape check: check its meaning too.
        raw = manifest.model_dump() if isinstance(manifest, Manifest) else dict(manifest)
        return obj(manifest=parse_manifest(raw, catalog, source=str(source)), source=source)
    if isinstance(obj, Connector):
        check_hook_signatures(type(obj), str(source))
        parse_manifest(obj.manifest.model_dump(), catalog, source=str(source))
        obj.source = source
        return obj
    if isinstance(obj, dict):
        return Connector(parse_manifest(obj, catalog, source=str(source)), source)
    raise ManifestError(
        f"{source}: entry point must name a Connector subclass, instance or manifest dict",
        details={"source": str(source), "problems": []},
    )


def load_registry(
    catalog: Catalog,
    *,
    directories: Iterable[Path] = (),
    builtins: Iterable[Connector] = (),
    plugins: Iterable[EntryPoint] | None = None,
) -> ConnectorRegistry:
    """Discover connectors; ``plugins`` defaults to the installed entry points."""
    registry = ConnectorRegistry()
    for connector in builtins:
        registry.add(connector)
    for directory in directories:
        if not directory.is_dir():
            registry.problems.append(
                RegistryProblem(str(directory), "connectors directory does not exist")
            )
            continue
        for path in sorted(directory.glob("*.toml")):
            try:
                manifest = load_manifest_file(path, catalog)
            except ManifestError as exc:
                registry.problems.append(
                    RegistryProblem(str(path), exc.message, tuple(exc.details.get("problems", ())))
                )
                continue
            registry.add(Connector(manifest, ConnectorSource("file", str(path))))
    if plugins is None:
        plugins = entry_points(group=ENTRY_POINT_GROUP)
    for ep in plugins:
        try:
            connector = _from_entry_point(ep, catalog)
        except ManifestError as exc:
            registry.problems.append(
                RegistryProblem(
                    exc.details.get("source", ep.name),
                    exc.message,
                    tuple(exc.details.get("problems", ())),
                )
            )
            continue
        registry.add(connector)
    return registry


def forbidden_use_problems(manifest: Manifest, policy: Policy) -> list[str]:
    """One message per data declaration whose use the operator's policy forbids."""
    return [
        f"data[{i}].use: {d.use!r} is forbidden by the data-use policy ({forbidden})"
        for i, d in enumerate(manifest.data)
        if (forbidden := policy.forbids(d.use)) is not None
    ]


def refuse_forbidden_uses(registry: ConnectorRegistry, policy: Policy) -> None:
    """Unload every connector that declares a use the policy forbids (kept as a problem)."""
    for connector in list(registry.connectors.values()):
        problems = forbidden_use_problems(connector.manifest, policy)
        if problems:
            del registry.connectors[connector.id]
            registry.problems.append(
                RegistryProblem(
                    str(connector.source), "declares a forbidden data use", tuple(problems)
                )
            )
