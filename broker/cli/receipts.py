"""``broker receipts``: check a consent receipt offline; the receipt verifier keys.

``broker receipts verify FILE --public-key KEY`` needs no database and no broker
configuration: ``KEY`` is a verifier key (``<name>+<kid>+<key>``), a file of them (what
``broker receipts public-key`` / ``broker audit public-key --receipts`` print, ``retired=``
times included) or a JWK Set file (``broker receipts public-key --format jwks``). Both
receipt formats are accepted: the Kantara JWS and the older signed note. With ``--log``
(an ``broker audit export-log`` file) it also finds the JWS receipt's SHA-256 in the
consent's ``consent.granted`` entry. Exit 0: genuine (and, with ``--log``, included);
1: not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from broker.cli.common import runtime, say

__all__ = ["register"]


def _verifiers(spec: str) -> list[Any]:
    import base64
    import binascii

    from broker.core.checkpoint import NoteVerifier
    from broker.core.errors import InvalidInput

    path = Path(spec)
    if not path.is_file():
        return [NoteVerifier.from_vkey(spec)]
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        try:
            keys = json.loads(text)["keys"]
            out = []
            for k in keys:
                raw = base64.urlsafe_b64decode(k["x"] + "=" * (-len(k["x"]) % 4))
                v = NoteVerifier(str(k["name"]), raw, k.get("retired_at"))
                if v.key_id.hex() != k.get("kid"):
                    raise ValueError(f"key {k.get('kid')!r} does not match its name and key")
                out.append(v)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise InvalidInput(f"{spec} is not a receipt JWK Set: {exc}") from None
        return out
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            vkey, _, extra = line.strip().partition(" ")
            retired = extra.partition("retired=")[2].split(" ")[0] or None
            out.append(NoteVerifier.from_vkey(vkey, not_after=retired))
    return out


def _logged(log: str, consent_id: object, sha256: str) -> int | None:
    """The seq of the ``consent.granted`` entry of ``consent_id`` carrying ``sha256``."""
    with open(log, encoding="utf-8") as lines:
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            entry = row.get("entry", row) if isinstance(row, dict) else None
            if (
                isinstance(entry, dict)
                and entry.get("event") == "consent.granted"
                and entry.get("consent_id") == consent_id
                and (entry.get("details") or {}).get("receipt_sha256") == sha256
            ):
                return int(entry["seq"])
    return None


def _summary(result: dict[str, Any]) -> str:
    body = result["receipt"]
    if result["format"] == "jws":
        return (
            f"consent {body.get('consentReceiptID')} of {body.get('piiPrincipalId')} "
            f"(Kantara JWS, sha256 {result['sha256']})"
        )
    return f"consent {body.get('consent_id')} of {body.get('user_id')} (signed note)"


def cmd_receipts_verify(args: argparse.Namespace) -> int:
    from broker.core.errors import InvalidInput
    from broker.flows.receipts import check_receipt

    try:
        text = Path(args.receipt).read_text(encoding="utf-8")
        result = check_receipt(text, _verifiers(args.public_key))
        seq = None
        if args.log:
            if result["format"] != "jws":
                raise InvalidInput("--log checks JWS receipts only (a note has no logged digest)")
            seq = _logged(args.log, result["receipt"].get("consentReceiptID"), result["sha256"])
            if seq is None:
                raise InvalidInput(
                    "the receipt's SHA-256 is in no consent.granted entry of the exported log"
                )
    except (InvalidInput, OSError, UnicodeDecodeError) as exc:
        message = exc.message if isinstance(exc, InvalidInput) else f"cannot read: {exc}"
        if args.json:
            say(json.dumps({"ok": False, "problem": message}, indent=2))
        else:
            say(f"receipt FAILED: {message}")
        return 1
    if args.json:
        say(json.dumps({"ok": True, **result, "log_seq": seq}, indent=2))
        return 0
    where = f"; its digest is in the log at seq {seq}" if seq is not None else ""
    say(f"receipt OK: {_summary(result)}, signed by key {result['key_id']}{where}")
    return 0


def cmd_receipts_public_key(args: argparse.Namespace) -> int:
    from broker.flows.receipts import receipt_jwks, receipt_public_keys

    rt = runtime()
    if args.format == "jwks":
        say(json.dumps(receipt_jwks(rt), indent=2))
        return 0
    for k in receipt_public_keys(rt)["keys"]:
        say(k["vkey"] + (f" retired={k['retired_at']}" if k["retired_at"] else ""))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("receipts", help="consent receipts: verify offline, verifier keys")
    receipts = group.add_subparsers(dest="receipts_command", required=True)
    p = receipts.add_parser(
        "verify", help="check a consent receipt offline (JWS or note; exit 0: genuine)"
    )
    p.add_argument("receipt", help="the receipt file (consent-….jws or consent-….note)")
    p.add_argument(
        "--public-key",
        required=True,
        help="receipt verifier key, a file of them (broker receipts public-key) or a JWK Set",
    )
    p.add_argument(
        "--log", default=None, help="an exported log (broker audit export-log): find its digest"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_receipts_verify)
    p = receipts.add_parser(
        "public-key", help="the receipt verifier keys (vkey lines, or a JWK Set for JOSE tools)"
    )
    p.add_argument("--format", choices=["vkey", "jwks"], default="vkey")
    p.set_defaults(func=cmd_receipts_public_key)
