"""Verify an exported audit log against signed checkpoints, trusting nothing but the keys.

    python3 -m broker.verify_export LOG.jsonl --public-key KEYS [--checkpoint FILE ...]
        [--witness-keys WKEYS [--witness-quorum K]]      (or: broker audit verify-export)

Standalone: the standard library and ``cryptography`` only; copy it out and run it alone.
Inputs: the ``broker audit export-log`` file; the log's verifier keys, one a line, a
retired one followed by `` retired=<time>``; checkpoint files (signed notes, each followed
by a blank line; default ``LOG.jsonl.checkpoints``); witness keys (type 0x04 vkeys): a
checkpoint is *witnessed* when K of them cosigned it (C2SP ``cosignature/v1``).
The checks, in order, as docs/auditors.md ("The algorithm") describes them; the first
failure is reported with its kind and ``first_bad_seq``: 1. checkpoints signed by a given
key under their origin, not after its retirement (witnessed time, else an old ``time``
line), no failing cosignature (**untrusted_checkpoint**), one root per size (**forked**),
with witness keys one witnessed (**unwitnessed**; coverage then counts from the last
witnessed); 2. line n is entry n, linked and hashed, else **modified**, **deleted**,
**reordered** or **inserted**; 3. the RFC 9162 root at each checkpoint size matches (else
**modified**, or **forked** when a later one matches again); 4. the log reaches the
largest checkpoint (**truncated**). Entries after the last one: ``unsigned_tail``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
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


def load_keys(text: str, kind: bytes = b"\x01") -> list[Key]:
    """Keys ``name+hexid+base64(kind || key)`` [`` retired=T``]; kind 0x04: witnesses."""
    keys = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        vkey, _, extra = line.strip().partition(" ")
        name, kid, b64 = [*vkey.split("+", 2), "", ""][:3]  # too few parts: refused below
        raw = base64.b64decode(b64, validate=True)
        expect = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
        if raw[:1] != kind or len(raw) != 33 or expect.hex() != kid:
            raise ValueError(f"not an Ed25519 verifier key: {vkey}")
        keys.append(Key(name, expect, raw[1:], extra.partition("retired=")[2] or None))
    return keys


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    time: str | None = None  # the ``time`` line of checkpoints from before witnessing
    witnessed: int | None = None  # POSIX time by which the quorum of witnesses cosigned


def _epoch(t: str) -> int:
    m = int(t[5:7])  # "2026-01-31T12:00:00Z" as POSIX seconds (proleptic Gregorian)
    y, mp = int(t[:4]) - (m <= 2), m - 3 if m > 2 else m + 9
    days = 365 * y + y // 4 - y // 100 + y // 400 + (153 * mp + 2) // 5 + int(t[8:10]) - 719469
    return days * 86400 + int(t[11:13]) * 3600 + int(t[14:16]) * 60 + int(t[17:19])


def _ok(key: Key, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(key.public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def read_checkpoints(
    text: str, keys: list[Key], witnesses: list[Key] | None = None, quorum: int = 1
) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints a given key signed (``witnessed``: by ``quorum`` witnesses), refusals."""
    good, refused = [], []
    blocks = [b for b in text.split("\n\n") if b.strip()]
    for body, sigs in zip(blocks[::2], blocks[1::2], strict=False):
        note, lines = body + "\n", body.split("\n")
        try:
            time = next((x[5:] for x in lines[3:] if x[:5] == "time "), None)
            cp = Checkpoint(lines[0], int(lines[1]), base64.b64decode(lines[2]), time)
        except (IndexError, ValueError):
            refused.append(f"malformed checkpoint {lines[:2]}")
            continue
        verdict, stamps, key = "signed by no known key", {}, None
        for sig in sigs.strip("\n").split("\n"):
            name, _, b64 = sig.removeprefix("\u2014 ").partition(" ")
            try:
                raw = base64.b64decode(b64, validate=True)
            except ValueError:
                continue
            w = next((k for k in witnesses or () if (k.name, k.key_id) == (name, raw[:4])), None)
            ts = int.from_bytes(raw[4:12], "big")  # cosignature/v1: key id, time, Ed25519
            if w and not _ok(w, raw[12:], b"cosignature/v1\ntime %d\n%s" % (ts, note.encode())):
                verdict, key = f"bad cosignature by witness {name}", None
                break
            stamps.update({w.key_id: ts} if w else {})
            found = next((k for k in keys if k.name == name and k.key_id == raw[:4]), None)
            if found is None or key is not None:
                continue
            if not _ok(found, raw[4:], note.encode()):
                verdict = f"bad signature by {name}+{found.key_id.hex()}"
                break
            key = found
        if key is not None:
            if witnesses is not None and len(stamps) >= quorum:
                cp = replace(cp, witnessed=sorted(stamps.values())[quorum - 1])
            at = cp.witnessed if cp.witnessed is not None else cp.time and _epoch(cp.time)
            if key.name != cp.origin:
                verdict = f"signed as {key.name}, not as its origin {cp.origin}"
            elif key.retired and at and at > _epoch(key.retired):
                verdict = f"signed at {at} (POSIX) by key {key.key_id.hex()}, retired {key.retired}"
            else:
                verdict = ""
        if verdict:
            refused.append(f"checkpoint of size {cp.size}: {verdict}")
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
    witnessed: int | None = None  # checkpoints the quorum cosigned (given witness keys)
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

    first_prev: bytes = b""  # prev_hash of its first line
    first_seq: int = -1
    last: bytes = b""  # hash of its last good line
    leaves: list[bytes] = field(default_factory=list)
    bad: int | None = None  # index (in the chunk) of the first line that failed


def _scan(path: str, start: int, end: int) -> _Chunk:
    """Check the lines of ``path[start:end]`` to the first bad one; their leaf hashes (hot)."""
    with open(path, "rb") as fh:
        fh.seek(start)
        lines = fh.read(end - start).splitlines()
    chunk, sha256 = _Chunk(), hashlib.sha256
    leaves = chunk.leaves
    last, seq = None, -1
    for line in lines:
        framed = line[:9] == HEAD and line[-154:-145] == MID and line[-81:-66] == TAIL
        if not framed or line[-2:] != b'"}':
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
            out.append((start, end := min(fh.tell(), total)))
            start = end
    return out


def verify_export(
    path: str,
    checkpoints: list[Checkpoint],
    refused: list[str],
    *,
    workers: int = 0,
    chunk: int = 16 << 20,
    witnessed: bool = False,
) -> Report:
    """Verify the export at ``path``: lines in byte ranges of about ``chunk`` bytes (in
    ``workers`` processes when > 1), the Merkle tree here, in order. ``witnessed``: coverage
    counts only checkpoints with a ``witnessed`` time."""
    report = Report(checkpoints=len(checkpoints), refused=list(refused))
    if refused:
        return report.fail(None, "untrusted_checkpoint", f"refused {refused[0]}")
    wsizes = {c.size for c in checkpoints if c.witnessed is not None} if witnessed else set()
    report.witnessed = len(wsizes) if witnessed else None
    if witnessed and not wsizes:
        return report.fail(None, "unwitnessed", "no checkpoint is cosigned by the quorum")
    roots: dict[int, bytes] = {}
    for cp in sorted(checkpoints, key=lambda c: c.size):
        if roots.setdefault(cp.size, cp.root) != cp.root:
            msg = f"two checkpoints of size {cp.size} have different roots"
            return report.fail(cp.size, "forked", msg)
    if not roots:
        return report.fail(None, "no_checkpoint", "no signed checkpoint to verify against")
    ranges = _ranges(path, chunk)
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(ranges) > 2 else None
    scan = (_scan(path, a, b) for a, b in ranges)
    chunks = pool.map(_scan, repeat(path), *zip(*ranges, strict=True)) if pool else scan
    sha256, stack = hashlib.sha256, list[bytes]()
    last, n, good, bad, wgood = GENESIS, 0, 0, None, 0  # bad: (first, size) of a bad root
    try:
        for part in chunks:
            joined = part.bad == 0 or (part.first_prev == last and part.first_seq == n + 1)
            for leaf in part.leaves if joined else ():
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
                        good, wgood = n, n if n in wsizes else wgood
                    elif not bad:
                        bad = (good + 1, n)
            if joined and part.bad is None:
                last = part.last
                continue
            seq, kind, msg = _failure(path, n)
            if bad is None or seq < bad[0]:
                report.entries, report.verified = n, good
                return report.fail(seq, kind, msg)
            break
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    report.entries, report.verified = n, (wgood if witnessed else good)
    if bad:
        msg = f"entries {bad[0]} to {bad[1]} differ from what checkpoint {bad[1]} signed"
        return report.fail(bad[0], "modified", msg + " (and the chain was recomputed to hide it)")
    top = max(roots)
    if n < top:
        msg = f"the log ends at entry {n}; checkpoint {top} was signed"
        return report.fail(n + 1, "truncated", msg)
    report.unsigned_tail = n - (max(wsizes) if witnessed else top)
    return report


def _parse(line: bytes) -> tuple[int, bytes, bytes, bool] | None:
    """(seq, hash, prev_hash, hash verifies) of any line, or None if unreadable."""
    if (parts := _split(line)) is None:
        return None
    entry, h, prev = parts
    try:
        seq = json.loads(entry)["seq"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(seq, int):
        return None
    return seq, h, prev, hashlib.sha256(prev + b"\n" + entry).hexdigest().encode() == h


def _classify(n: int, recent: dict[bytes, int], line: bytes, ahead: list[bytes]) -> tuple:
    """Why line ``n`` does not follow the good lines ``recent`` (hash -> seq): (seq, kind, msg)."""
    last, c = next(reversed(recent)), _parse(line)
    if c is None:
        return n, "modified", f"line {n} is not an audit entry (edited or corrupted)"
    (seq, h, prev, valid), later = c, [p for p in map(_parse, ahead) if p]
    if prev in {p[1] for p in later} and any(p[2] == last for p in later):
        return n, "reordered", f"entry {n} is out of order: the entry in its place follows it"
    if seq == n and (prev == last or not valid):
        return n, "modified", f"entry {n} was changed: its contents do not match its hash"
    if seq == n and prev in recent:
        return n, "inserted", f"entry {n} was inserted: it links to entry {recent[prev]}"
    if seq == n:
        if n > 1 and (not later or later[0][2] == h):
            msg = f"entry {n - 1} was changed and re-hashed: entry {n} links to another hash"
            return n - 1, "modified", msg
        return n, "modified", f"entry {n} was replaced: it links to no entry before it"
    if seq > n:
        if any(p[0] == n for p in later):
            return n, "reordered", f"entry {n} is out of order: entry {seq} comes before it"
        gone = f"entry {n} was" if seq == n + 1 else f"entries {n} to {seq - 1} were"
        return n, "deleted", f"{gone} deleted: entry {seq} follows entry {n - 1}"
    msg = f"an entry claiming seq {seq}, already used, was inserted after entry {n - 1}"
    return n, "inserted", msg


def _failure(path: str, n: int) -> tuple[int, str, str]:
    """Classify line ``n + 1`` (lines 1 to ``n`` verified), reading WINDOW lines each side."""
    with open(path, "rb") as fh:
        hashes = (fh.readline().rstrip(b"\n")[-145:-81] for _ in range(n))  # good lines
        recent = {GENESIS: 0} if n < WINDOW else {}
        recent.update((h, i) for i, h in enumerate(hashes, 1) if i > n - WINDOW)
        line = fh.readline()
        ahead = [x for x in (fh.readline() for _ in range(WINDOW)) if x]
    return _classify(n + 1, recent, line, ahead)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="verify_export", description=__doc__.split("\n")[0])
    p.add_argument("export", help="the log as `broker audit export-log` writes it")
    p.add_argument("--public-key", required=True, help="verifier key, or a file of them")
    p.add_argument("--checkpoint", action="append", default=[], help="default EXPORT.checkpoints")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--witness-keys", help="file of witness keys (vkeys of type 0x04)")
    p.add_argument("--witness-quorum", type=int, default=1, help="cosignatures needed")
    args = p.parse_args(argv)
    checkpoints, refused = list[Checkpoint](), list[str]()
    try:
        key_path = Path(args.public_key)
        keys = load_keys(key_path.read_text() if key_path.is_file() else args.public_key)
        wk = load_keys(Path(args.witness_keys).read_text(), b"\x04") if args.witness_keys else None
        if wk is not None and not 1 <= args.witness_quorum <= len(wk):
            raise ValueError(f"--witness-quorum must be from 1 to {len(wk)}")
        for name in args.checkpoint or [args.export + ".checkpoints"]:
            text = Path(name).read_text(encoding="utf-8")
            good, bad = read_checkpoints(text, keys, wk, args.witness_quorum)
            checkpoints, refused = checkpoints + good, refused + bad
        report = verify_export(
            args.export, checkpoints, refused, workers=args.workers, witnessed=wk is not None
        )
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.ok:
        w = f", {report.witnessed} witnessed" if report.witnessed is not None else ""
        print(
            f"export verified: {report.entries} entries, {report.verified} covered by "
            f"{report.checkpoints} signed checkpoint(s){w}; {report.unsigned_tail} after the last"
        )
    else:
        where = f" at seq {report.first_bad_seq}" if report.first_bad_seq is not None else ""
        print(f"export FAILED{where}: {report.problem}: {report.message}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
