"""Verify an exported audit log against signed checkpoints, trusting nothing but the keys.

    python3 -m broker.verify_export LOG.jsonl --public-key KEYS [--checkpoint FILE ...]
    broker audit verify-export LOG.jsonl --public-key KEYS [--checkpoint FILE ...]

Standalone on purpose: the Python standard library and ``cryptography`` only, no broker
module, no database, no configuration; this file can be copied out and run alone.
docs/auditors.md describes the same algorithm for reimplementation.

Inputs
  LOG.jsonl   ``broker audit export-log``: one line per entry, in seq order, each line
              exactly ``{"entry":<canonical content>,"hash":"<hex>","prev_hash":"<hex>"}``
  KEYS        a file of verifier keys, one per line, ``<name>+<key id>+<base64 key>``,
              optionally followed by `` retired=<time>`` (``GET /v1/audit/public-key``
              ``?format=text``); or one such key given directly
  FILE        checkpoint files: C2SP signed notes, each followed by a blank line
              (default: ``LOG.jsonl.checkpoints`` written next to the export)

Checks, in order; the first failure is reported with its kind and the first seq that
cannot be vouched for (``first_bad_seq``):
  1. every checkpoint is signed by a given key under its own origin, and not after that
     key was retired -> otherwise **untrusted_checkpoint**;
     two checkpoints of one size with different roots -> **forked**;
  2. line n is entry n: ``seq == n``, ``prev_hash`` is line n-1's ``hash`` (64 ``0``
     for n = 1) and ``hash == SHA-256(prev_hash || 0x0A || entry bytes)``; on the first
     line that is not, the kind is read from it and up to 1000 lines after it:
     **modified** (contents or hash edited; or the entry before it edited and re-hashed),
     **deleted** (seq jumps ahead, the missing seq appears nowhere), **reordered** (it
     appears later), **inserted** (an extra line: a seq already used);
  3. the Merkle root (RFC 9162; leaf = SHA-256(0x00 || entry bytes)) at each checkpoint
     size equals the checkpoint's root. A mismatch means entries up to that size were
     changed after it was signed (the chain recomputed to hide it): **modified**, the
     range between the last matching checkpoint and this one; but when a *later*
     checkpoint matches, the log itself signed two histories: **forked**;
  4. the log is at least as long as the largest checkpoint -> otherwise **truncated**.
Entries after the last checkpoint pass the chain checks only (``unsigned_tail``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import repeat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["Key", "Report", "load_keys", "main", "read_checkpoints", "verify_export"]

GENESIS = b"0" * 64
HEAD, MID, TAIL = b'{"entry":', b',"hash":"', b'","prev_hash":"'
WINDOW = 1000


@dataclass(frozen=True)
class Key:
    name: str
    key_id: bytes
    public: bytes
    retired: str | None = None


def load_keys(text: str) -> list[Key]:
    """Verifier keys: ``name+hexid+base64(0x01 || key)``, each optionally `` retired=T``."""
    keys = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        vkey, _, extra = line.strip().partition(" ")
        name, kid, b64 = vkey.split("+", 2)
        raw = base64.b64decode(b64, validate=True)
        expect = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
        if raw[:1] != b"\x01" or len(raw) != 33 or expect.hex() != kid:
            raise ValueError(f"not an Ed25519 verifier key: {vkey}")
        retired = extra.partition("retired=")[2] or None
        keys.append(Key(name, expect, raw[1:], retired))
    return keys


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: str


def read_checkpoints(text: str, keys: list[Key]) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints a known key signed, and a message for each one refused."""
    good, refused = [], []
    blocks = [b for b in text.split("\n\n") if b.strip()]
    for body, sigs in zip(blocks[::2], blocks[1::2], strict=False):
        note = body + "\n"
        lines = body.split("\n")
        try:
            time = next(x[5:] for x in lines if x[:5] == "time ")
            cp = Checkpoint(lines[0], int(lines[1]), base64.b64decode(lines[2]), time)
        except (IndexError, ValueError, StopIteration):
            refused.append(f"malformed checkpoint {lines[:2]}")
            continue
        verdict = "signed by no known key"
        for sig in sigs.strip("\n").split("\n"):
            name, _, b64 = sig.removeprefix("\u2014 ").partition(" ")
            try:
                raw = base64.b64decode(b64, validate=True)
            except ValueError:
                continue
            key = next((k for k in keys if k.name == name and k.key_id == raw[:4]), None)
            if key is None:
                continue
            try:
                Ed25519PublicKey.from_public_bytes(key.public).verify(raw[4:], note.encode())
            except InvalidSignature:
                verdict = f"bad signature by {name}+{key.key_id.hex()}"
                break
            if name != cp.origin:
                verdict = f"signed as {name}, not as its origin {cp.origin}"
            elif key.retired and cp.time > key.retired:
                verdict = f"signed at {cp.time} by key {key.key_id.hex()}, retired {key.retired}"
            else:
                verdict = ""
            break
        if verdict:
            refused.append(f"checkpoint of size {cp.size} at {cp.time}: {verdict}")
        else:
            good.append(cp)
    return good, refused


@dataclass
class Report:
    ok: bool = True
    entries: int = 0
    checkpoints: int = 0
    verified: int = 0  # entries covered by a matching checkpoint
    unsigned_tail: int = 0
    first_bad_seq: int | None = None
    problem: str | None = None
    message: str | None = None
    refused: list[str] = field(default_factory=list)

    def fail(self, seq: int | None, problem: str, message: str) -> Report:
        self.ok, self.first_bad_seq, self.problem, self.message = False, seq, problem, message
        return self

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _split(line: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(entry bytes, hash, prev_hash) of one export line, or None if it is not one."""
    line = line.rstrip(b"\n")
    if line[:9] != HEAD or line[-154:-145] != MID or line[-81:-66] != TAIL or line[-2:] != b'"}':
        return None
    return line[9:-154], line[-145:-81], line[-66:-2]


@dataclass
class _Chunk:
    """What one pass over a byte range of the export found (see ``_scan``)."""

    start: int  # byte offset of its first line
    first_prev: bytes = b""  # prev_hash of its first line
    first_seq: int = -1
    last: bytes = b""  # hash of its last good line
    leaves: list[bytes] = field(default_factory=list)
    bad: int | None = None  # index (in the chunk) of the first line that failed


def _scan(path: str, start: int, end: int) -> _Chunk:
    """Check each line of ``path[start:end]`` on its own and against the line before it
    (framing, ``seq`` one more, ``prev_hash`` linking, ``hash`` recomputing) and compute
    its leaf hash; stop at the first line that fails. (``_split`` inlined: this loop is
    the verifier's hot path.)"""
    with open(path, "rb") as fh:
        fh.seek(start)
        lines = fh.read(end - start).splitlines()
    chunk, sha256 = _Chunk(start), hashlib.sha256
    leaves = chunk.leaves
    last, seq = None, -1
    for line in lines:
        if (
            line[:9] != HEAD
            or line[-154:-145] != MID
            or line[-81:-66] != TAIL
            or line[-2:] != b'"}'
        ):
            chunk.bad = len(leaves)
            break
        entry, h, prev = line[9:-154], line[-145:-81], line[-66:-2]
        # The members after "seq" (time, transfer_id, user_id) are strings or null, which
        # cannot hold an unescaped quote: the last ',"seq":' is the top-level one.
        i = entry.rfind(b',"seq":') + 7
        j = entry.find(b",", i)
        got = int(entry[i:j]) if i > 6 and entry[i:j].isdigit() else -1
        if last is None:
            chunk.first_prev, chunk.first_seq, last, seq = prev, got, prev, got
        elif prev != last or got != seq:
            chunk.bad = len(leaves)
            break
        if sha256(prev + b"\n" + entry).hexdigest().encode() != h:
            chunk.bad = len(leaves)
            break
        leaves.append(sha256(b"\x00" + entry).digest())
        last, seq = h, seq + 1
    chunk.last = last or b""
    return chunk


def _ranges(path: str, size: int) -> list[tuple[int, int]]:
    """Byte ranges of about ``size`` bytes that start and end at line boundaries."""
    out, start, total = [], 0, Path(path).stat().st_size
    with open(path, "rb") as fh:
        while start < total:
            fh.seek(min(start + size, total))
            fh.readline()
            end = min(fh.tell(), total)
            out.append((start, end))
            start = end
    return out


def verify_export(
    path: str,
    checkpoints: list[Checkpoint],
    refused: list[str],
    *,
    workers: int = 0,
    chunk: int = 16 << 20,
) -> Report:
    """Verify the export at ``path``. Lines are checked in byte ranges of about ``chunk``
    bytes, in ``workers`` processes when > 1; the Merkle tree is built here, in order."""
    report = Report(checkpoints=len(checkpoints), refused=list(refused))
    if refused:
        return report.fail(None, "untrusted_checkpoint", f"refused {refused[0]}")
    roots: dict[int, bytes] = {}
    for cp in sorted(checkpoints, key=lambda c: c.size):
        if roots.setdefault(cp.size, cp.root) != cp.root:
            return report.fail(
                cp.size, "forked", f"two checkpoints of size {cp.size} have different roots"
            )
    if not roots:
        return report.fail(None, "no_checkpoint", "no signed checkpoint to verify against")
    ranges = _ranges(path, chunk)
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(ranges) > 2 else None
    chunks = (
        pool.map(_scan, repeat(path), *zip(*ranges, strict=True))
        if pool
        else (_scan(path, a, b) for a, b in ranges)
    )
    sha256, stack = hashlib.sha256, []
    last, n, good, bad = GENESIS, 0, 0, None  # bad: (first, size) of a root that differs
    try:
        for chunk in chunks:
            joined = chunk.bad == 0 or (chunk.first_prev == last and chunk.first_seq == n + 1)
            for leaf in chunk.leaves if joined else ():
                n += 1
                i = n - 1
                while i & 1:  # RFC 9162 tree, right edge only: merge completed subtrees
                    leaf = sha256(b"\x01" + stack.pop() + leaf).digest()
                    i >>= 1
                stack.append(leaf)
                if n in roots:
                    root = stack[-1]
                    for left in reversed(stack[:-1]):
                        root = sha256(b"\x01" + left + root).digest()
                    if root == roots[n] and bad:
                        msg = f"checkpoint {bad[1]} signed other entries {bad[0]} to {bad[1]}"
                        return report.fail(bad[0], "forked", f"{msg} than checkpoint {n} signs")
                    if root == roots[n]:
                        good = n
                    elif not bad:
                        bad = (good + 1, n)
            if joined and chunk.bad is None:
                last = chunk.last
                continue
            skip = len(chunk.leaves) if joined else 0
            seq, kind, msg = _failure(path, chunk.start, skip, n, chunk.last if skip else last)
            if bad is None or seq < bad[0]:
                report.entries, report.verified = n, good
                return report.fail(seq, kind, msg)
            break
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    report.entries, report.verified = n, good
    if bad:
        msg = f"entries {bad[0]} to {bad[1]} differ from what checkpoint {bad[1]} signed"
        return report.fail(bad[0], "modified", msg + " (and the chain was recomputed to hide it)")
    top = max(roots)
    if n < top:
        msg = f"the log ends at entry {n}; checkpoint {top} was signed"
        return report.fail(n + 1, "truncated", msg)
    report.unsigned_tail = n - top
    return report


def _parse(line: bytes) -> tuple[int, bytes, bytes, bool] | None:
    """(seq, hash, prev_hash, hash verifies) of any line, or None if unreadable."""
    parts = _split(line)
    if parts is None:
        return None
    entry, h, prev = parts
    try:
        seq = json.loads(entry)["seq"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(seq, int):
        return None
    return seq, h, prev, hashlib.sha256(prev + b"\n" + entry).hexdigest().encode() == h


def _classify(n: int, last: bytes, line: bytes, ahead: list[bytes]) -> tuple[int, str, str]:
    """Why line ``n`` does not follow the entry whose hash is ``last``: (seq, kind, message)."""
    c = _parse(line)
    if c is None:
        return n, "modified", f"line {n} is not an audit entry (edited or corrupted)"
    seq, h, prev, valid = c
    later = [p for p in map(_parse, ahead) if p]
    if seq == n:
        if prev == last or not valid:
            return n, "modified", f"entry {n} was changed: its contents do not match its hash"
        if n > 1 and (not later or later[0][2] == h):
            return (
                n - 1,
                "modified",
                f"entry {n - 1} was changed and re-hashed: entry {n} links to another hash",
            )
        return n, "modified", f"entry {n} was replaced: it links to no entry before it"
    if seq > n:
        if any(p[0] == n for p in later):
            return n, "reordered", f"entry {n} is out of order: entry {seq} comes before it"
        gone = f"entry {n} was" if seq == n + 1 else f"entries {n} to {seq - 1} were"
        return n, "deleted", f"{gone} deleted: entry {seq} follows entry {n - 1}"
    return (
        n,
        "inserted",
        f"an entry claiming seq {seq}, already used, was inserted after entry {n - 1}",
    )


def _failure(path: str, start: int, skip: int, n: int, last: bytes) -> tuple[int, str, str]:
    """Classify line ``n + 1``, found ``skip`` lines after byte ``start``, reading up to
    WINDOW lines after it."""
    with open(path, "rb") as fh:
        fh.seek(start)
        for _ in range(skip):
            fh.readline()
        line = fh.readline()
        ahead = [x for x in (fh.readline() for _ in range(WINDOW)) if x]
    return _classify(n + 1, last, line, ahead)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="verify_export", description=__doc__.split("\n")[0])
    p.add_argument("export")
    p.add_argument("--public-key", required=True, help="verifier key, or a file of them")
    p.add_argument("--checkpoint", action="append", default=[], help="checkpoint file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    args = p.parse_args(argv)
    checkpoints: list[Checkpoint] = []
    refused: list[str] = []
    try:
        key_path = Path(args.public_key)
        keys = load_keys(key_path.read_text() if key_path.is_file() else args.public_key)
        for name in args.checkpoint or [args.export + ".checkpoints"]:
            good, bad = read_checkpoints(Path(name).read_text(encoding="utf-8"), keys)
            checkpoints += good
            refused += bad
        report = verify_export(args.export, checkpoints, refused, workers=args.workers)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.ok:
        print(
            f"export verified: {report.entries} entries, {report.verified} covered by "
            f"{report.checkpoints} signed checkpoint(s); {report.unsigned_tail} after the last"
        )
    else:
        where = f" at seq {report.first_bad_seq}" if report.first_bad_seq is not None else ""
        print(f"export FAILED{where}: {report.problem}: {report.message}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
