"""``broker disclose``: record a disclosure the law required (no consent)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from broker.cli.common import runtime, say

__all__ = ["register"]


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def cmd_disclose(args: argparse.Namespace) -> int:
    from broker.flows.disclosures import DisclosureRequest, record_disclosure

    request = DisclosureRequest.parse(
        {
            "user_id": args.user,
            "recipient": args.recipient,
            "categories": args.categories,
            "legal_basis": args.legal_basis,
            "reference": args.reference,
            "purpose": args.purpose,
            "field_paths": args.fields,
        }
    )
    entry = record_disclosure(runtime(), request, actor="cli")
    if args.json:
        say(json.dumps(entry, indent=2))
    else:
        say(
            f"recorded legal disclosure of {', '.join(entry['categories'])} of {entry['user_id']} "
            f"to {args.recipient} (audit entry {entry['seq']}, {entry['legal_basis']}, "
            f"reference {args.reference})"
        )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "disclose", help="record a disclosure required by law (no consent); reports flag it"
    )
    p.add_argument("--user", required=True, help="the platform user whose data was disclosed")
    p.add_argument("--recipient", required=True, help="who received it (e.g. an authority)")
    p.add_argument(
        "--categories", required=True, type=_list, help="catalog categories, comma-separated"
    )
    p.add_argument(
        "--legal-basis",
        required=True,
        choices=["legal_obligation", "vital_interests", "public_task", "legitimate_interests"],
    )
    p.add_argument("--reference", required=True, help="the order or request, e.g. a case number")
    p.add_argument("--purpose", default=None)
    p.add_argument("--fields", type=_list, default=[], help="field paths, comma-separated")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_disclose)
