"""Operations: ``broker keys rotate``, ``broker transfers reconcile``, ``broker db upgrade``."""

from __future__ import annotations

import argparse
from typing import Any

from broker.cli.common import runtime, say
from broker.core.statuses import TransferStatus
from broker.core.times import rfc3339

__all__ = ["register"]


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    if args.signing:
        from broker.flows.checkpoints import rotate_signing_key

        done = rotate_signing_key(runtime(), actor="cli")
        say(
            f"new checkpoint signing key {done['new_key_id']}; key {done['previous_key_id']} "
            f"signed a last checkpoint (size {done['last_checkpoint_size']}) and is retired "
            "(its public key is kept for verification)"
        )
        say(f"verifier key: {done['verifier_key']}")
        return 0
    from broker.flows.rotation import rotate_token_key

    result = rotate_token_key(runtime(), actor="cli")
    say(
        f"new token-encryption key {result['new_key_id']}; re-sealed the tokens of "
        f"{result['resealed']} connection(s), {result['resealed_webhook_endpoints']} "
        f"webhook secret(s), {result['resealed_client_secrets']} tenant client secret(s); "
        f"earlier keys kept: {', '.join(result['previous_key_ids'])}"
    )
    return 0


def cmd_transfers_reconcile(args: argparse.Namespace) -> int:
    from broker.flows.reconcile import find_interrupted, reconcile

    rt = runtime()
    if args.dry_run:
        stale = find_interrupted(rt, older_than=args.older_than)
        for t in stale:
            say(f"pending {t.id} since {rfc3339(t.created_at)} -> {t.connector_id}")
        say(f"{len(stale)} interrupted transfer(s)")
        return 0
    resolved = reconcile(rt, older_than=args.older_than)
    for t in resolved:
        if t.status == TransferStatus.PENDING:
            say(f"{t.id}: queued again under its idempotency key (the third party is idempotent)")
        else:
            say(f"{t.id}: {t.status} (interrupted; the third party may have received it)")
    say(f"{len(resolved)} interrupted transfer(s) resolved")
    return 0


def cmd_transfers_stats(args: argparse.Namespace) -> int:
    import json

    from broker.flows.stats import delivery_stats

    stats = delivery_stats(runtime())
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True, default=str))
        return 0
    for key, value in stats.items():
        say(f"{key:<28} {value}")
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
    say(f"database schema at {args.revision}")
    return 0


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="encryption keys").add_subparsers(dest="keys", required=True)
    p = keys.add_parser("rotate", help="new token-encryption key; re-seal stored tokens")
    p.add_argument(
        "--signing", action="store_true", help="rotate the checkpoint signing key instead"
    )
    p.set_defaults(func=cmd_keys_rotate)

    tr = sub.add_parser("transfers", help="transfers").add_subparsers(
        dest="transfers", required=True
    )
    p = tr.add_parser(
        "reconcile", help="resolve transfers whose worker stopped mid-delivery (expired leases)"
    )
    p.add_argument(
        "--older-than",
        type=int,
        default=None,
        metavar="SECONDS",
        help="only transfers pending longer than this (default BROKER_RECONCILE_AFTER)",
    )
    p.add_argument("--dry-run", action="store_true", help="report only")
    p.set_defaults(func=cmd_transfers_reconcile)
    p = tr.add_parser("stats", help="the delivery queue and outcomes, as /metrics shows them")
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.set_defaults(func=cmd_transfers_stats)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    p = db.add_parser("upgrade", help="apply migrations (Alembic)")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_db_upgrade)
