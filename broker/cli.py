"""The ``broker`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from broker import __version__
from broker.core.errors import BrokerError

__all__ = ["main"]


def _settings(args: argparse.Namespace):
    from broker.settings import Settings

    overrides = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    return Settings(**overrides)


def _say(line: str) -> None:
    print(line, flush=True)


def _build_app(args: argparse.Namespace, *, demo: bool):
    from broker.runtime import build_runtime
    from broker.web.app import create_app

    settings = _settings(args)
    base = settings.resolved_base_url
    builtins = []
    mounts = {}
    provider = None
    if demo:
        from broker.core.catalog import default_catalog, load_catalog
        from broker.demo import sandbox_connector, sandbox_setup

        catalog = load_catalog(settings.catalog) if settings.catalog else default_catalog()
        provider, sandbox_app = sandbox_setup(settings.callback_url)
        builtins.append(sandbox_connector(catalog, f"{base}/sandbox"))
        mounts["/sandbox"] = sandbox_app
    rt = build_runtime(settings, builtins=builtins)
    for line in rt.created:
        _say(line)
    if not rt.created:
        _say(f"using broker home {settings.home.resolve()}")
    for problem in rt.registry.problems:
        _say(f"warning: connector {problem.source}: {problem.message}")
    app = create_app(rt, mounts=mounts)
    if demo:
        from broker.demo import demo_router
        from broker.flows.keys import create_api_key

        app.include_router(demo_router(rt, provider))
        _, raw = create_api_key(rt.engine, role="admin", label="demo")
        _say(f"demo admin API key (shown once): {raw}")
        _say(f"demo page: {base}/demo")
    _say(f"broker listening on {base}  (OAuth callback {settings.callback_url})")
    return app, settings


def cmd_serve(args: argparse.Namespace, *, demo: bool = False) -> int:
    import uvicorn

    app, settings = _build_app(args, demo=demo)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return cmd_serve(args, demo=True)


def _runtime(upgrade: bool | None = None):
    from broker.runtime import build_runtime
    from broker.settings import Settings

    return build_runtime(Settings(), upgrade=upgrade)


def cmd_create_key(args: argparse.Namespace) -> int:
    from broker.flows.keys import create_api_key

    rt = _runtime()
    row, raw = create_api_key(rt.engine, role=args.role, label=args.label)
    _say(raw)
    print(
        f"created {row.role} key {row.id}; it is shown once and stored only as a hash",
        file=sys.stderr,
    )
    return 0


def cmd_connectors_list(args: argparse.Namespace) -> int:
    rt = _runtime()
    rows = [c.summary() for c in rt.registry.all()]
    if args.json:
        problems = [
            {"source": p.source, "message": p.message, "problems": list(p.problems)}
            for p in rt.registry.problems
        ]
        _say(json.dumps({"connectors": rows, "problems": problems}, indent=2))
    else:
        if not rows:
            _say("no connectors installed")
        for row in rows:
            _say(f"{row['id']:<20} {row['name']:<30} {row['source']}")
            _say(f"{'':<20} receives: {', '.join(row['categories'])}")
        for p in rt.registry.problems:
            _say(f"refused {p.source}: {p.message}")
            for line in p.problems:
                _say(f"  - {line}")
    return 0


def cmd_connectors_check(args: argparse.Namespace) -> int:
    from broker.core.catalog import default_catalog, load_catalog
    from broker.core.manifest import load_manifest_file
    from broker.settings import Settings

    settings = Settings()
    catalog = load_catalog(settings.catalog) if settings.catalog else default_catalog()
    manifest = load_manifest_file(Path(args.path), catalog)
    _say(
        f"{args.path}: ok — {manifest.id} ({manifest.name}), "
        f"{len(manifest.data)} data categories, {len(manifest.actions)} actions"
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from broker.settings import Settings
    from broker.store.db import create_db_engine, upgrade_schema

    settings = Settings()
    if settings.is_embedded_database:
        settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_db_engine(settings.resolved_database_url)
    upgrade_schema(engine, args.revision)
    engine.dispose()
    _say(f"database schema at {args.revision}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="broker", description=__doc__)
    parser.add_argument("--version", action="version", version=f"broker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, func, help_ in (
        ("serve", cmd_serve, "run the API and pages"),
        ("demo", cmd_demo, "run with a built-in sandbox third party and a demo user"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--host", default=None, help="interface (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=None, help="port (default 8000)")
        p.set_defaults(func=func)

    admin = sub.add_parser("admin", help="API keys").add_subparsers(dest="admin", required=True)
    p = admin.add_parser("create-key", help="print a new API key once")
    p.add_argument("--role", required=True, choices=["admin", "auditor"])
    p.add_argument("--label", default=None)
    p.set_defaults(func=cmd_create_key)

    conn = sub.add_parser("connectors", help="installed connectors").add_subparsers(
        dest="connectors", required=True
    )
    p = conn.add_parser("list", help="list connectors and refused manifests")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_connectors_list)
    p = conn.add_parser("check", help="validate a manifest file")
    p.add_argument("path")
    p.set_defaults(func=cmd_connectors_check)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    p = db.add_parser("upgrade", help="apply migrations (Alembic)")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_db_upgrade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except BrokerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for problem in exc.details.get("problems", []):
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
