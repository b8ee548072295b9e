"""The ``broker`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from broker import __version__
from broker.core.errors import BrokerError

if TYPE_CHECKING:
    from datetime import datetime

    from fastapi import FastAPI

    from broker.core.catalog import Catalog
    from broker.flows.audit import TransferFilter
    from broker.runtime import Runtime
    from broker.settings import Settings

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    from broker.settings import Settings

    overrides = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    return Settings(**overrides)


def _say(line: str) -> None:
    print(line, flush=True)


def _build_app(args: argparse.Namespace, *, demo: bool) -> tuple[FastAPI, Settings]:
    from broker.runtime import build_runtime
    from broker.web.app import create_app

    settings = _settings(args)
    base = settings.resolved_base_url
    builtins = []
    mounts = {}
    provider = None
    if demo:
        from broker.demo import sandbox_connector, sandbox_setup

        provider, sandbox_app = sandbox_setup(settings.callback_url)
        builtins.append(sandbox_connector(_catalog(settings), f"{base}/sandbox"))
        mounts["/sandbox"] = sandbox_app
    rt = build_runtime(settings, builtins=builtins)
    for line in rt.created:
        _say(line)
    if not rt.created:
        _say(f"using broker home {settings.home.resolve()}")
    _report_reconcile(rt)
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


def _report_reconcile(rt: Runtime) -> None:
    from broker.flows.reconcile import reconcile

    for t in reconcile(rt):
        _say(
            f"transfer {t.id} was interrupted (pending since {t.created_at:%Y-%m-%d %H:%M:%S}); "
            "marked failed — the third party may or may not have received it"
        )


def cmd_serve(args: argparse.Namespace, *, demo: bool = False) -> int:
    import uvicorn

    app, settings = _build_app(args, demo=demo)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return cmd_serve(args, demo=True)


def _runtime(upgrade: bool | None = None) -> Runtime:
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


def cmd_list_keys(args: argparse.Namespace) -> int:
    from broker.flows.keys import list_api_keys

    for key in list_api_keys(_runtime().engine):
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        _say(f"{key.id:<22} {key.role:<8} {state:<18} {key.label or ''}")
    return 0


def cmd_revoke_key(args: argparse.Namespace) -> int:
    from broker.flows.keys import revoke_api_key

    revoke_api_key(_runtime().engine, args.key_id)
    _say(f"revoked {args.key_id}; requests with it now get 401")
    return 0


def cmd_connectors_list(args: argparse.Namespace) -> int:
    from broker.core.registry import load_registry

    settings = _settings(args)
    registry = load_registry(_catalog(settings), directories=settings.connector_dirs)
    rows = [c.summary() for c in registry.all()]
    if args.json:
        problems = [
            {"source": p.source, "message": p.message, "problems": list(p.problems)}
            for p in registry.problems
        ]
        _say(json.dumps({"connectors": rows, "problems": problems}, indent=2))
    else:
        if not rows:
            _say("no connectors installed")
        for row in rows:
            _say(f"{row['id']:<20} {row['name']:<30} {row['source']}")
            _say(f"{'':<20} receives: {', '.join(row['categories'])}")
        for p in registry.problems:
            _say(f"refused {p.source}: {p.message}")
            for line in p.problems:
                _say(f"  - {line}")
    return 0


def _catalog(settings: Settings) -> Catalog:
    from broker.core.catalog import default_catalog, load_catalog

    return load_catalog(settings.catalog) if settings.catalog else default_catalog()


def cmd_connectors_check(args: argparse.Namespace) -> int:
    from broker.core.manifest import load_manifest_file

    manifest = load_manifest_file(Path(args.path), _catalog(_settings(args)))
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


def _parse_time(value: str) -> datetime:
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} needs a time zone, e.g. 2026-01-01T00:00Z")
    return parsed


def _filter(args: argparse.Namespace) -> TransferFilter:
    from broker.flows.audit import TransferFilter

    return TransferFilter(
        user_id=args.user,
        connector_id=args.connector,
        category=args.category,
        status=args.status,
        since=args.since,
        until=args.until,
    )


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from broker.flows.audit import verify_log

    result = verify_log(_runtime())
    if args.json:
        _say(json.dumps(result.to_dict(), indent=2))
    elif result.ok:
        head = f" (head seq {result.head.seq}, {result.head.hash[:16]}…)" if result.head else ""
        _say(f"audit log intact: {result.checked} entries verified{head}")
    else:
        where = f" at seq {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        _say(f"audit log FAILED{where}: {result.problem}: {result.message}")
    return 0 if result.ok else 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    from broker.flows.audit import export_transfers

    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        for chunk in export_transfers(_runtime(), _filter(args), args.format):
            out.write(chunk)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_audit_report(args: argparse.Namespace) -> int:
    from broker.flows.audit import recipients_report

    report = recipients_report(_runtime())
    if args.json:
        _say(json.dumps(report, indent=2, default=str))
        return 0
    if not report:
        _say("no third party has received data")
    for r in report:
        _say(
            f"{r['name']} ({r['connector']}): {r['transfers']} delivered, "
            f"{r['failed']} failed, {r['blocked']} blocked"
        )
        if r["first_at"]:
            _say(
                f"  first {r['first_at']:%Y-%m-%d %H:%M:%S}, last {r['last_at']:%Y-%m-%d %H:%M:%S}"
            )
        _say(f"  categories: {', '.join(r['categories']) or '-'}")
        _say(f"  fields:     {', '.join(r['field_paths']) or '-'}")
        if r["privacy_policy_url"]:
            _say(f"  policy: {r['privacy_policy_url']}  terms: {r['terms_url']}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from broker.flows.rotation import rotate_token_key

    result = rotate_token_key(_runtime(), actor="cli")
    _say(
        f"new token-encryption key {result['new_key_id']}; re-sealed the tokens of "
        f"{result['resealed']} connection(s); earlier keys kept: "
        f"{', '.join(result['previous_key_ids'])}"
    )
    return 0


def cmd_transfers_reconcile(args: argparse.Namespace) -> int:
    from broker.flows.reconcile import find_interrupted, reconcile

    rt = _runtime()
    if args.dry_run:
        stale = find_interrupted(rt, older_than=args.older_than)
        for t in stale:
            _say(f"pending {t.id} since {t.created_at:%Y-%m-%d %H:%M:%S} -> {t.connector_id}")
        _say(f"{len(stale)} interrupted transfer(s)")
        return 0
    resolved = reconcile(rt, older_than=args.older_than)
    for t in resolved:
        _say(f"marked {t.id} failed (interrupted; the third party may have received it)")
    _say(f"{len(resolved)} interrupted transfer(s) resolved")
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
    p = admin.add_parser("list-keys", help="key ids, roles and state (never the keys)")
    p.set_defaults(func=cmd_list_keys)
    p = admin.add_parser("revoke-key", help="revoke an API key by id")
    p.add_argument("key_id")
    p.set_defaults(func=cmd_revoke_key)

    conn = sub.add_parser("connectors", help="installed connectors").add_subparsers(
        dest="connectors", required=True
    )
    p = conn.add_parser("list", help="list connectors and refused manifests")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_connectors_list)
    p = conn.add_parser("check", help="validate a manifest file")
    p.add_argument("path")
    p.set_defaults(func=cmd_connectors_check)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit", required=True
    )
    p = audit.add_parser("verify", help="exit 0 only when the hash chain is intact")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_verify)
    p = audit.add_parser("export", help="transfers as JSONL or CSV")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--output", "-o", default=None, help="file (default: standard output)")
    for name in ("user", "connector", "category"):
        p.add_argument(f"--{name}", default=None)
    p.add_argument("--status", choices=["pending", "delivered", "failed", "blocked"])
    p.add_argument("--since", type=_parse_time, default=None)
    p.add_argument("--until", type=_parse_time, default=None)
    p.set_defaults(func=cmd_audit_export)
    p = audit.add_parser("report", help="what each third party has received")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_report)

    keys = sub.add_parser("keys", help="encryption keys").add_subparsers(dest="keys", required=True)
    p = keys.add_parser("rotate", help="new token-encryption key; re-seal stored tokens")
    p.set_defaults(func=cmd_keys_rotate)

    tr = sub.add_parser("transfers", help="transfers").add_subparsers(
        dest="transfers", required=True
    )
    p = tr.add_parser("reconcile", help="resolve transfers interrupted between record and send")
    p.add_argument(
        "--older-than",
        type=int,
        default=None,
        metavar="SECONDS",
        help="only transfers pending longer than this (default BROKER_RECONCILE_AFTER)",
    )
    p.add_argument("--dry-run", action="store_true", help="report only")
    p.set_defaults(func=cmd_transfers_reconcile)

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
    except ValidationError as exc:
        for err in exc.errors():
            name = "BROKER_" + "_".join(str(p) for p in err["loc"]).upper()
            print(f"error: {name}: {err['msg']}", file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for problem in exc.details.get("problems", []):
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
