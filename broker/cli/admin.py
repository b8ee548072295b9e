"""``broker admin``: API keys."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from broker.cli.common import runtime, say

__all__ = ["register"]


def cmd_create_key(args: argparse.Namespace) -> int:
    from broker.flows.keys import create_api_key

    rt = runtime()
    row, raw = create_api_key(rt.engine, role=args.role, label=args.label)
    say(raw)
    print(
        f"created {row.role} key {row.id}; it is shown once and stored only as a hash",
        file=sys.stderr,
    )
    return 0


def cmd_list_keys(args: argparse.Namespace) -> int:
    from broker.flows.keys import list_api_keys

    for key in list_api_keys(runtime().engine):
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        say(f"{key.id:<22} {key.role:<8} {state:<18} {key.label or ''}")
    return 0


def cmd_revoke_key(args: argparse.Namespace) -> int:
    from broker.flows.keys import revoke_api_key

    revoke_api_key(runtime().engine, args.key_id)
    say(f"revoked {args.key_id}; requests with it now get 401")
    return 0


def register(sub: Any) -> None:
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
