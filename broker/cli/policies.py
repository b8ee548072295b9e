"""``broker policies``: check third parties' policy pages; list and classify changes.

``broker policies check`` fetches every connector's privacy policy and terms pages
now (``--connector`` for one), records each fetch and any change of terms
(``policy.changed``); exit 0. ``broker policies changes`` lists the changes recorded.
``broker policies classify CHANGE_ID significant|minor --reason TEXT`` overrides a
change's classification (``policy.classified``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from broker.cli.common import runtime, say
from broker.core.times import rfc3339

__all__ = ["register"]


def _change_dict(change: Any) -> dict[str, Any]:
    return {
        "id": change.id,
        "connector": change.connector_id,
        "classification": change.classification,
        "detected_at": rfc3339(change.detected_at),
        "detected_by": change.detected_by,
        "before_version": change.before_version,
        "after_version": change.after_version,
        "digests": change.digests,
        "changes": change.changes,
        "classified_by": change.classified_by,
        "classified_reason": change.classified_reason,
    }


def cmd_policies_check(args: argparse.Namespace) -> int:
    from broker.flows.policy_checks import check_policies

    rt = runtime()
    try:
        outcomes = check_policies(
            rt, actor="cli", connector_ids=[args.connector] if args.connector else None
        )
    finally:
        rt.close()
    if args.json:
        out = [
            {
                "connector": o.connector_id,
                "terms_version": o.terms_version,
                "pages": {
                    page: {
                        "url": row.url,
                        "outcome": row.outcome,
                        "http_status": row.http_status,
                        "digest": row.digest,
                        "error": row.error,
                    }
                    for page, row in o.checks.items()
                },
                "change": _change_dict(o.change) if o.change is not None else None,
            }
            for o in outcomes
        ]
        say(json.dumps(out, indent=2))
        return 0
    for o in outcomes:
        say(f"{o.connector_id}: terms version {o.terms_version[:16]}")
        for page, row in o.checks.items():
            what = f"sha256:{row.digest[:16]}" if row.digest else f"not retrieved ({row.error})"
            say(f"  {page}: {row.url} — {what}")
        if o.change is not None:
            say(f"  {o.change.classification} change {o.change.id}:")
            for item in o.change.changes:
                say(f"    - {item['text']}")
    return 0


def cmd_policies_changes(args: argparse.Namespace) -> int:
    from broker.flows.terms import list_changes

    rt = runtime()
    try:
        changes = list_changes(rt, args.connector)
    finally:
        rt.close()
    if args.json:
        say(json.dumps([_change_dict(c) for c in changes], indent=2))
        return 0
    for c in changes:
        by = f", classified by {c.classified_by}: {c.classified_reason}" if c.classified_by else ""
        say(f"{c.id} {rfc3339(c.detected_at)} {c.connector_id} {c.classification}{by}")
        for item in c.changes:
            say(f"  - {item['text']}")
    return 0


def cmd_policies_classify(args: argparse.Namespace) -> int:
    from broker.flows.terms import classify_change

    rt = runtime()
    try:
        change = classify_change(
            rt, args.change_id, args.classification, reason=args.reason, actor="cli"
        )
    finally:
        rt.close()
    say(f"{change.id} is now {change.classification}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "policies", help="third parties' policy pages: check them, list and classify changes"
    )
    policies = group.add_subparsers(dest="policies_command", required=True)
    p = policies.add_parser("check", help="fetch every policy and terms page now and compare")
    p.add_argument("--connector", default=None, help="only this connector")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_policies_check)
    p = policies.add_parser("changes", help="the terms changes recorded, oldest first")
    p.add_argument("--connector", default=None, help="only this connector")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_policies_changes)
    p = policies.add_parser("classify", help="mark a change significant or minor (audited)")
    p.add_argument("change_id", help="the change (pchg_…), from `broker policies changes`")
    p.add_argument("classification", choices=["significant", "minor"])
    p.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    p.set_defaults(func=cmd_policies_classify)
