"""``broker connectors``: list installed connectors, check a manifest, start a new one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from broker.cli import common
from broker.cli.common import catalog, say

__all__ = ["register"]


def cmd_connectors_list(args: argparse.Namespace) -> int:
    from broker.core.policy import load_policy
    from broker.core.registry import load_registry, refuse_forbidden_uses

    settings = common.settings(args)
    registry = load_registry(catalog(settings), directories=settings.connector_dirs)
    refuse_forbidden_uses(registry, load_policy(settings.policy_file))
    from broker.flows.oauth_clients import credentials_problem

    rows = []
    for connector in registry.all():
        row = connector.summary()
        # operators see what is missing (environment variable names included); the
        # connect page does not offer such a connector at all
        row["credentials"] = credentials_problem(connector) or "ok"
        row["callback_url"] = settings.connector_callback_url(connector.id)
        rows.append(row)
    if args.json:
        problems = [
            {"source": p.source, "message": p.message, "problems": list(p.problems)}
            for p in registry.problems
        ]
        say(json.dumps({"connectors": rows, "problems": problems}, indent=2))
    else:
        if not rows:
            say("no connectors installed")
        for row in rows:
            say(f"{row['id']:<20} {row['name']:<30} {row['source']}")
            say(f"{'':<20} receives: {', '.join(row['categories'])}")
            say(f"{'':<20} redirect URI: {row['callback_url']}")
            if row["credentials"] != "ok":
                say(f"{'':<20} not offered to users: {row['credentials']}")
        for p in registry.problems:
            say(f"refused {p.source}: {p.message}")
            for line in p.problems:
                say(f"  - {line}")
    return 0


def cmd_connectors_check(args: argparse.Namespace) -> int:
    from broker.core.errors import ManifestError
    from broker.core.manifest import load_manifest_file
    from broker.core.policy import load_policy
    from broker.core.registry import forbidden_use_problems

    settings = common.settings(args)
    manifest = load_manifest_file(Path(args.path), catalog(settings))
    problems = forbidden_use_problems(manifest, load_policy(settings.policy_file))
    if problems:
        raise ManifestError(
            f"{args.path}: declares a data use the policy forbids",
            details={"source": args.path, "problems": problems},
        )
    say(
        f"{args.path}: ok — {manifest.id} ({manifest.name}), "
        f"{len(manifest.data)} data categories, {len(manifest.actions)} actions"
    )
    return 0


def installed_connectors() -> dict[str, str]:
    """The ids a new connector may not take, each with where it comes from: the
    built-in sandbox, the ``BROKER_CONNECTORS_PATH`` files and the entry points
    (refused ones included: their name is taken all the same)."""
    from importlib.metadata import entry_points

    from broker.core.registry import ENTRY_POINT_GROUP, load_registry
    from broker.demo import sandbox_connector

    settings = common.settings()
    sandbox = sandbox_connector(catalog(settings), "http://127.0.0.1/sandbox")
    taken = {sandbox.id: str(sandbox.source)}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        taken.setdefault(ep.name, f"entry_point:{dist} ({ep.name} = {ep.value})")
    registry = load_registry(catalog(settings), directories=settings.connector_dirs)
    for connector in registry.all():
        taken.setdefault(connector.id, str(connector.source))
    return taken


def cmd_connectors_new(args: argparse.Namespace) -> int:
    from broker.cli.scaffold import scaffold

    installed = installed_connectors()  # a clash is a Conflict: main() reports it
    try:
        root = scaffold(args.name, Path(args.dir), installed=installed)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    say(f"created {root}")
    say(f"next: cd {root} && python3 -m pip install -e '.[test]' && python3 -m pytest")
    return 0


def register(sub: Any) -> None:
    conn = sub.add_parser("connectors", help="installed connectors").add_subparsers(
        dest="connectors", required=True
    )
    p = conn.add_parser("list", help="list connectors and refused manifests")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_connectors_list)
    p = conn.add_parser("check", help="validate a manifest file")
    p.add_argument("path")
    p.set_defaults(func=cmd_connectors_check)
    p = conn.add_parser("new", help="create a connector package with a contract test")
    p.add_argument("name", help="the connector id, e.g. acme-chat")
    p.add_argument("--dir", default=".", help="where to create it (default: here)")
    p.set_defaults(func=cmd_connectors_new)
