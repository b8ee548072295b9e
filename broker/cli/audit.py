"""``broker audit``: verify the log, export transfers, report per recipient."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from broker.cli.common import add_transfer_filters, runtime, say, transfer_filter

__all__ = ["register"]


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from broker.flows.audit import verify_log

    result = verify_log(runtime())
    if args.json:
        say(json.dumps(result.to_dict(), indent=2))
    elif result.ok:
        head = f" (head seq {result.head.seq}, {result.head.hash[:16]}…)" if result.head else ""
        say(f"audit log intact: {result.checked} entries verified{head}")
    else:
        where = f" at seq {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        say(f"audit log FAILED{where}: {result.problem}: {result.message}")
    return 0 if result.ok else 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    from broker.flows.audit import export_transfers

    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        for chunk in export_transfers(runtime(), transfer_filter(args), args.format):
            out.write(chunk)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_audit_report(args: argparse.Namespace) -> int:
    from broker.flows.audit import recipients_report

    report = recipients_report(runtime())
    if args.json:
        say(json.dumps(report, indent=2, default=str))
        return 0
    if not report:
        say("no third party has received data")
    for r in report:
        say(
            f"{r['name']} ({r['connector']}): {r['transfers']} delivered, "
            f"{r['failed']} failed, {r['blocked']} blocked"
        )
        if r["first_at"]:
            say(f"  first {r['first_at']:%Y-%m-%d %H:%M:%S}, last {r['last_at']:%Y-%m-%d %H:%M:%S}")
        say(f"  categories: {', '.join(r['categories']) or '-'}")
        say(f"  fields:     {', '.join(r['field_paths']) or '-'}")
        if r["privacy_policy_url"]:
            say(f"  policy: {r['privacy_policy_url']}  terms: {r['terms_url']}")
    return 0


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit", required=True
    )
    p = audit.add_parser("verify", help="exit 0 only when the hash chain is intact")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_verify)
    p = audit.add_parser("export", help="transfers as JSONL or CSV")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--output", "-o", default=None, help="file (default: standard output)")
    add_transfer_filters(p)
    p.set_defaults(func=cmd_audit_export)
    p = audit.add_parser("report", help="what each third party has received")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_report)
