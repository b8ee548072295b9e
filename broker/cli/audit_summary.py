"""``broker audit summary``: the recipient summary the reports read, checked or rebuilt.

    broker audit summary                    # the summary, per recipient and status
    broker audit summary --check            # recount from the transfers; exit 1 if it differs
    broker audit summary --rebuild          # rewrite it from the transfers
    broker audit summary --rebuild --check  # both: list what differed, then rewrite it

``--check`` and ``--rebuild`` hold the audit append lock while they count (deliveries
wait meanwhile) and show their progress on standard error (none with ``--json``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from broker.cli.common import runtime, say
from broker.core.times import json_default, rfc3339

__all__ = ["register"]


def _show(key: tuple[str, str, str, str]) -> str:
    connector_id, status, kind, item = key
    return f"{connector_id} {status} {kind}{f' {item}' if item else ''}"


def _side(value: dict[str, Any] | None) -> str:
    if value is None:
        return "missing"
    return f"{value['transfers']} ({value['first_at']} .. {value['last_at']})"


def _print_summary(rows: list[dict[str, Any]]) -> None:
    if not rows:
        say("the summary is empty: no transfer has ended (or see --check)")
    for r in rows:
        say(
            f"{r['connector_id']:<24} {r['status']:<16} {r['transfers']:>9,}  "
            f"first {rfc3339(r['first_at'])}  last {rfc3339(r['last_at'])}"
        )


def cmd_audit_summary(args: argparse.Namespace) -> int:
    from broker.cli.progress import progress
    from broker.flows.summaries import check_summary, read_summary

    rt = runtime()
    if not (args.check or args.rebuild):
        with rt.engine.connect() as conn:
            stored = read_summary(conn, kinds=("transfer",))
        rows = [
            {"connector_id": c, "status": s, "transfers": n, "first_at": first, "last_at": last}
            for (c, s, _k, _i), (n, first, last) in sorted(stored.items())
        ]
        if args.json:
            say(json.dumps({"recipients": rows}, indent=2, default=json_default))
        else:
            _print_summary(rows)
        return 0
    label = "summary --rebuild" if args.rebuild else "summary --check"
    with progress(label, unit="transfers", quiet=args.json or args.quiet) as shown:
        result = check_summary(rt.engine, rebuild=args.rebuild, check=args.check, progress=shown)
    if args.json:
        say(json.dumps(result.to_dict(), indent=2))
    else:
        for d in result.to_dict()["differences"]:
            key = (d["connector_id"], d["status"], d["kind"], d["item"])
            say(f"differs: {_show(key)}: stored {_side(d['stored'])}, "
                f"transfers say {_side(d['expected'])}")  # fmt: skip
        counted = f"{result.transfers:,} transfers, {result.rows:,} summary rows"
        if args.check:
            found = "matches" if result.ok else f"{len(result.differences)} row(s) differ"
            say(f"summary {found} ({counted})")
        if args.rebuild:
            say(f"summary rebuilt from the transfers ({counted})")
    return 0 if result.ok else 1


def register(audit: Any) -> None:
    p = audit.add_parser(
        "summary",
        help="the recipient summary the reports read; --check or --rebuild it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--check", action="store_true",
        help="recount it from the transfers and list every row that differs (exit 1)",
    )  # fmt: skip
    p.add_argument("--rebuild", action="store_true", help="rewrite it from the transfers")
    p.add_argument("--json", action="store_true", help="the result as JSON (no progress)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on standard error")
    p.set_defaults(func=cmd_audit_summary)
