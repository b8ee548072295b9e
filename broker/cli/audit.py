"""``broker audit``: verify the log, export transfers and the log, checkpoints, reports."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from broker.cli.common import add_transfer_filters, runtime, say, transfer_filter
from broker.core.times import json_default, rfc3339

__all__ = ["register"]


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from broker.cli.progress import progress
    from broker.flows.audit import verify_log

    rt = runtime()
    with progress("audit verify", quiet=args.json or args.quiet) as shown:
        result = verify_log(rt, progress=shown, workers=args.workers)
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
    from broker.cli.progress import progress
    from broker.flows.audit import export_transfers

    rt, flt = runtime(), transfer_filter(args)
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        with progress("audit export", unit="transfers", quiet=args.quiet) as shown:
            for chunk in export_transfers(rt, flt, args.format, progress=shown):
                out.write(chunk)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_audit_report(args: argparse.Namespace) -> int:
    from broker.flows.audit import recipients_report
    from broker.flows.report_meta import meta_comment_lines, report_meta

    rt = runtime()
    report, meta = recipients_report(rt), report_meta(rt)
    if args.json:
        say(json.dumps({"recipients": report, "report": meta}, indent=2, default=json_default))
        return 0
    for line in meta_comment_lines(meta):
        say(line)
    if not report:
        say("no third party has received data")
    for r in report:
        say(
            f"{r['name']} ({r['connector'] or 'legal disclosure'}): {r['transfers']} delivered, "
            f"{r['failed']} failed, {r['blocked']} blocked"
        )
        if r["first_at"]:
            say(f"  first {rfc3339(r['first_at'])}, last {rfc3339(r['last_at'])}")
        if r.get("legal_disclosure"):
            say(f"  LEGAL DISCLOSURE (no consent); references: {', '.join(r['references'])}")
        say(f"  categories: {', '.join(r['categories']) or '-'}")
        say(f"  fields:     {', '.join(r['field_paths']) or '-'}")
        if r["privacy_policy_url"]:
            say(f"  policy: {r['privacy_policy_url']}  terms: {r['terms_url']}")
    return 0


def _write(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def cmd_audit_export_log(args: argparse.Namespace) -> int:
    from broker.cli.progress import progress
    from broker.flows.audit import export_checkpoints, export_log

    rt = runtime()
    with open(args.output, "wb") as out, progress("export-log", quiet=args.quiet) as shown:
        n = export_log(rt, out, progress=shown)
    with open(args.output + ".checkpoints", "wb") as out:
        c = export_checkpoints(rt, out)
    say(f"wrote {n} entries to {args.output} and {c} checkpoint(s) to {args.output}.checkpoints")
    if c == 0:
        say(
            "no checkpoint has been signed yet, so verify-export has nothing to check the log "
            "against: sign one with `broker audit checkpoint` (`broker serve` signs them on "
            "its own) and export again"
        )
    return 0


def cmd_audit_verify_export(args: argparse.Namespace) -> int:
    from broker import verify_export

    argv = [args.export, "--public-key", args.public_key]
    for name in args.checkpoint:
        argv += ["--checkpoint", name]
    if args.workers is not None:
        argv += ["--workers", str(args.workers)]
    return verify_export.main([*argv, "--json"] if args.json else argv)


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from broker.flows.checkpoints import checkpoint_dict, sign_checkpoint

    row = sign_checkpoint(runtime())
    if args.json:
        say(json.dumps(checkpoint_dict(row), indent=2))
    else:
        say(row.note.rstrip("\n"))
    return 0


def cmd_audit_public_key(args: argparse.Namespace) -> int:
    from broker.flows.checkpoints import public_keys
    from broker.flows.receipts import receipt_public_keys

    rt = runtime()
    keys = receipt_public_keys(rt) if args.receipts else public_keys(rt)
    for k in keys["keys"]:
        say(k["vkey"] + (f" retired={k['retired_at']}" if k["retired_at"] else ""))
    return 0


def cmd_audit_verify_receipt(args: argparse.Namespace) -> int:
    from broker.core.errors import InvalidInput
    from broker.flows.receipts import verify_receipt

    note = Path(args.receipt).read_text(encoding="utf-8")
    try:
        result = verify_receipt(runtime(), note)  # a signed note or a Kantara JWS
    except InvalidInput as exc:
        bad = exc.message
        say(json.dumps({"ok": False, "problem": bad}) if args.json else f"receipt FAILED: {bad}")
        return 1
    if args.json:
        say(json.dumps({"ok": True, **result}, indent=2))
        return 0
    body = result["receipt"]
    key = f"key {result['key_id']}"
    if result["legacy"]:
        key += " (the checkpoint key, which signed receipts before the receipt key)"
    consent = body.get("consent_id") or body.get("consentReceiptID")
    user = body.get("user_id") or body.get("piiPrincipalId")
    kind = "Kantara JWS" if result["format"] == "jws" else "signed note"
    say(f"receipt OK: consent {consent} of {user} ({kind}), signed by {key}")
    return 0


def cmd_audit_user(args: argparse.Namespace) -> int:
    from broker.flows.connect import validate_user_id
    from broker.flows.user_report import user_report, user_report_csv
    from broker.web.reports import user_report_html

    report = user_report(runtime(), validate_user_id(args.user_id))
    if args.format == "csv":
        _write(user_report_csv(report), args.output)
    elif args.format == "html":
        _write(user_report_html(report), args.output)
    else:
        _write(json.dumps(report, indent=2, default=json_default) + "\n", args.output)
    return 0


def cmd_audit_records(args: argparse.Namespace) -> int:
    from broker.flows.processing_records import processing_records, records_yaml
    from broker.flows.report_meta import report_meta

    rt = runtime()
    records, meta = processing_records(rt), report_meta(rt)
    if args.format == "fides":
        _write(records_yaml(records, meta), args.output)
    else:
        body = {"recipients": records, "report": meta}
        _write(json.dumps(body, indent=2, default=json_default) + "\n", args.output)
    return 0


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit", required=True
    )
    p = audit.add_parser("verify", help="exit 0 only when the hash chain is intact")
    p.add_argument("--json", action="store_true", help="the result as JSON (no progress)")
    p.add_argument(
        "--workers", type=int, default=None,
        help="processes checking ranges of the log (default: one per CPU for a large log)",
    )  # fmt: skip
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on standard error")
    p.set_defaults(func=cmd_audit_verify)
    p = audit.add_parser("export", help="transfers as JSONL or CSV")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--output", "-o", default=None, help="file (default: standard output)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on standard error")
    add_transfer_filters(p)
    p.set_defaults(func=cmd_audit_export)
    p = audit.add_parser("report", help="what each third party has received")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_report)
    p = audit.add_parser("export-log", help="the log and its checkpoints, for verify-export")
    p.add_argument(
        "--output", "-o", required=True, help="log file; checkpoints go to FILE.checkpoints"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on standard error")
    p.set_defaults(func=cmd_audit_export_log)
    p = audit.add_parser(
        "verify-export", help="check an exported log against signed checkpoints (no database)"
    )
    p.add_argument("export")
    p.add_argument("--public-key", required=True, help="verifier key, or a file of them")
    p.add_argument("--checkpoint", action="append", default=[], help="checkpoint file (repeatable)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_verify_export)
    p = audit.add_parser("checkpoint", help="sign a checkpoint of the log now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_checkpoint)
    p = audit.add_parser("public-key", help="the checkpoint verifier keys (a key file)")
    p.add_argument(
        "--receipts", action="store_true", help="the consent-receipt verifier keys instead"
    )
    p.set_defaults(func=cmd_audit_public_key)
    p = audit.add_parser("verify-receipt", help="check a signed consent receipt (exit 0: genuine)")
    p.add_argument("receipt", help="the receipt file (consent-….note or consent-….jws)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit_verify_receipt)
    p = audit.add_parser("user", help="who received a user's data (GDPR Art. 15(1)(c))")
    p.add_argument("user_id")
    p.add_argument("--format", choices=["json", "csv", "html"], default="json")
    p.add_argument("--output", "-o", default=None, help="file (default: standard output)")
    p.set_defaults(func=cmd_audit_user)
    p = audit.add_parser("records", help="records of processing per recipient (GDPR Art. 30)")
    p.add_argument("--format", choices=["json", "fides"], default="json")
    p.add_argument("--output", "-o", default=None, help="file (default: standard output)")
    p.set_defaults(func=cmd_audit_records)
    __import__("broker.cli.monitor").cli.monitor.register(audit)  # monitor; witness options
    __import__("broker.cli.audit_summary").cli.audit_summary.register(audit)
