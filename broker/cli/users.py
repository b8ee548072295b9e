"""``broker users erase USER_ID``: erase a user (GDPR Art. 17); see broker.flows.erasure."""

from __future__ import annotations

import argparse
import json
from typing import Any

from broker.cli.common import runtime, say

__all__ = ["register"]


def cmd_users_erase(args: argparse.Namespace) -> int:
    from broker.flows.erasure import erase_user

    result = erase_user(runtime(), args.user_id, actor="cli")
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    say(f"{result['user_id']}: {result['message']}")
    if result["status"] == "erased":
        say(f"pseudonym {result['pseudonym']} now names nobody (audit entry {result['audit_seq']})")
        for name, count in sorted(result["counts"].items()):
            say(f"  {name:<20} {count}")
    return 0


def register(sub: Any) -> None:
    users = sub.add_parser("users", help="users (erasure)").add_subparsers(
        dest="users", required=True
    )
    p = users.add_parser(
        "erase",
        help="erase a user: revoke their connections, destroy their subject key (Art. 17)",
    )
    p.add_argument("user_id")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_users_erase)
