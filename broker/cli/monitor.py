"""``broker audit monitor``: watch a broker's log from outside; witness options for
``broker audit verify`` and ``verify-export``.

The monitor needs no database and no broker configuration: the broker's URL, an
auditor API key (``BROKER_AUDIT_KEY`` or ``--api-key-file``), the log's verifier keys
(``--keys``, the ``broker audit public-key`` file) and a directory of its own
(``--state``). Each poll fetches ``GET /v1/audit/checkpoint?format=note``, verifies the
log's signature (and, with ``--witness-keys``, the quorum of cosignatures), and compares
it with the last checkpoint it saw, kept in ``STATE/latest.note``:

- a smaller tree -> **the log shrank**; the same size with another root -> **fork**;
- a larger tree -> ``GET /v1/audit/proof/consistency?from=OLD&to=NEW``, checked (RFC
  9162) against the two roots it verified itself, never the roots in the answer; a
  proof that fails -> **fork** (what it saw before is not a prefix of what it sees now).

Then the new note replaces ``latest.note`` and is appended to ``STATE/checkpoints``.
A failure prints ``ALARM`` and the reason on standard error, writes both notes to
``STATE/alarm-<time>.txt`` (evidence: each is signed by the log) and exits 1, leaving
``latest.note`` as it was, so every later run fails too until someone looks. Exit 2:
the broker could not be asked (with ``--once``; otherwise the next poll tries again).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.cli.common import say

__all__ = ["register"]


class Alarm(Exception):
    """The log was seen to fork or shrink (or sign with keys it should not)."""


def _verifiers(path: str) -> list[Any]:
    from broker.core.checkpoint import NoteVerifier

    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            vkey, _, extra = line.strip().partition(" ")
            out.append(
                NoteVerifier.from_vkey(vkey, not_after=extra.partition("retired=")[2] or None)
            )
    return out


def _witness_keys(path: str) -> list[Any]:
    from broker.core.witness import CosignatureVerifier

    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [CosignatureVerifier.from_vkey(x.split()[0]) for x in lines if x.strip()]


class Monitor:
    def __init__(self, args: argparse.Namespace, key: str) -> None:
        import httpx

        self.state = Path(args.state)
        self.verifiers = _verifiers(args.keys)
        self.witnesses = _witness_keys(args.witness_keys) if args.witness_keys else []
        self.quorum = args.quorum
        self.http = httpx.Client(
            base_url=args.url.rstrip("/"), timeout=30, follow_redirects=False,
            headers={"Authorization": f"Bearer {key}"},
        )  # fmt: skip

    def _get(self, path: str, **params: str | int) -> Any:
        resp = self.http.get(path, params=params)
        if resp.status_code != 200:
            raise ConnectionError(f"GET {path} answered {resp.status_code}")
        return resp

    def _open(self, note: str) -> tuple[Any, str | None]:
        """The checkpoint in ``note`` (signed by a given key) and its witnessed time."""
        from broker.core.checkpoint import Checkpoint, open_note
        from broker.core.errors import InvalidInput
        from broker.core.witness import (
            format_timestamp,
            parse_cosignatures,
            quorum_time,
            split_note,
        )

        try:
            text, good = open_note(note, self.verifiers)
            cp = Checkpoint.parse(text)
            sigs = parse_cosignatures(text, split_note(note)[1], self.witnesses)
        except InvalidInput as exc:
            raise Alarm(f"the checkpoint does not verify: {exc.message}") from None
        if any(v.name != cp.origin for v in good):
            raise Alarm(f"the checkpoint of {cp.origin} is signed under another name")
        witnessed = None
        if self.witnesses:
            when = quorum_time([s.timestamp for s in {s.key_id: s for s in sigs}.values()],
                               self.quorum)  # fmt: skip
            if when is None:
                raise Alarm(f"checkpoint {cp.tree_size} is not cosigned by {self.quorum} witnesses")
            witnessed = format_timestamp(when)
            for v in good:
                if v.not_after and witnessed > v.not_after:
                    raise Alarm(f"key {v.key_id.hex()} signed at {witnessed}, after its retirement")
        return cp, witnessed

    def poll(self) -> str:
        """One look at the log; returns what was seen. Raises Alarm or ConnectionError."""
        from broker.core.merkle import verify_consistency

        note = self._get("/v1/audit/checkpoint", format="note").text
        cp, _ = self._open(note)
        latest = self.state / "latest.note"
        if not latest.exists():
            self._keep(note)
            return (
                f"first checkpoint recorded: size {cp.tree_size}, root {cp.root_hash.hex()[:16]}…"
            )
        old_note = latest.read_text(encoding="utf-8")
        old, _ = self._open(old_note)
        if old.origin != cp.origin:
            raise Alarm(f"the broker now serves the log {cp.origin}, not {old.origin}")
        if cp.tree_size < old.tree_size:
            self._evidence(old_note, note)
            raise Alarm(f"the log shrank: size {cp.tree_size} after size {old.tree_size}")
        if cp.tree_size == old.tree_size:
            if cp.root_hash != old.root_hash:
                self._evidence(old_note, note)
                raise Alarm(f"fork: two roots for size {cp.tree_size}")
            return f"checkpoint unchanged: size {cp.tree_size}"
        answer = self._get(
            "/v1/audit/proof/consistency", **{"from": old.tree_size, "to": cp.tree_size}
        ).json()
        try:
            proof = [bytes.fromhex(h) for h in answer["proof"]]
        except (KeyError, TypeError, ValueError):
            raise ConnectionError("the consistency proof answer is malformed") from None
        if not verify_consistency(old.tree_size, cp.tree_size, old.root_hash, cp.root_hash, proof):
            self._evidence(old_note, note)
            raise Alarm(
                f"fork: checkpoint {cp.tree_size} does not extend checkpoint {old.tree_size} "
                "(the consistency proof fails): the log changed what it signed before"
            )
        self._keep(note)
        return f"checkpoint {cp.tree_size} extends {old.tree_size} (consistency proof verified)"

    def _keep(self, note: str) -> None:
        from broker.core.private_files import append_private, write_private

        self.state.mkdir(parents=True, exist_ok=True)
        append_private(self.state / "checkpoints", note)
        write_private(self.state / "latest.note", note)

    def _evidence(self, old: str, new: str) -> None:
        from broker.core.private_files import write_private

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        text = f"# seen before\n{old}\n# seen now\n{new}"
        write_private(self.state / f"alarm-{stamp}.txt", text)


def cmd_audit_monitor(args: argparse.Namespace) -> int:
    key = os.environ.get("BROKER_AUDIT_KEY", "")
    if args.api_key_file:
        key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
    if not key:
        print("error: set BROKER_AUDIT_KEY or give --api-key-file", file=sys.stderr)
        return 2
    monitor = Monitor(args, key)
    while True:
        try:
            say(monitor.poll())
        except Alarm as exc:
            print(f"ALARM: {exc}", file=sys.stderr, flush=True)
            return 1
        except (ConnectionError, OSError, ValueError) as exc:
            print(f"error: could not check the log: {exc}", file=sys.stderr, flush=True)
            if args.once:
                return 2
        if args.once:
            return 0
        time.sleep(args.interval)


def _witness_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--witness-keys", default=None, help="file of witness (cosignature) keys")
    p.add_argument(
        "--quorum", "--witness-quorum", dest="quorum", type=int, default=1,
        help="cosignatures by these witnesses a checkpoint needs (default 1)",
    )  # fmt: skip


def _verify(original: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if not args.witness_keys:
            return original(args)
        from broker.cli.common import runtime
        from broker.flows.audit import verify_log
        from broker.flows.witnesses import check_cosignatures

        rt = runtime()
        result = verify_log(rt)
        witnessed = check_cosignatures(rt, _witness_keys(args.witness_keys), args.quorum)
        ok = result.ok and witnessed["ok"]
        if args.json:
            say(json.dumps({**result.to_dict(), "witnesses": witnessed, "ok": ok}, indent=2))
            return 0 if ok else 1
        code = original(args)
        if witnessed["ok"]:
            n, size = witnessed["witnessed"], witnessed["latest_witnessed_size"]
            say(f"witnessed: {n} checkpoint(s) cosigned by {args.quorum} or more witnesses, "
                f"the latest of size {size}")  # fmt: skip
        else:
            say(f"witnesses FAILED: {witnessed['message']}")
        return code or (0 if ok else 1)

    return run


def _verify_export(
    original: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if not args.witness_keys:
            return original(args)
        from broker import verify_export

        argv = [args.export, "--public-key", args.public_key]
        for name in args.checkpoint:
            argv += ["--checkpoint", name]
        if args.workers is not None:
            argv += ["--workers", str(args.workers)]
        argv += ["--witness-keys", args.witness_keys, "--witness-quorum", str(args.quorum)]
        return verify_export.main([*argv, "--json"] if args.json else argv)

    return run


def register(audit: Any) -> None:
    """``audit monitor``; and ``--witness-keys``/``--quorum`` on ``audit verify`` and
    ``audit verify-export`` (registered after them)."""
    p = audit.add_parser("monitor", help="watch a broker's checkpoints; fail on a fork or shrink")
    p.add_argument("--url", required=True, help="the broker's base URL")
    p.add_argument("--keys", required=True, help="the log's verifier key file")
    p.add_argument("--state", required=True, help="directory for the checkpoints it saw")
    p.add_argument("--api-key-file", default=None, help="auditor API key (or BROKER_AUDIT_KEY)")
    p.add_argument("--once", action="store_true", help="check once and exit")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between polls")
    _witness_options(p)
    p.set_defaults(func=cmd_audit_monitor)
    for name, wrap in (("verify", _verify), ("verify-export", _verify_export)):
        sub = audit.choices.get(name)
        if sub is not None:
            _witness_options(sub)
            sub.set_defaults(func=wrap(sub.get_default("func")))
