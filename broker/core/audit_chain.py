"""The audit log's hash chain: canonical entry encoding, sealing, verification, head file.

Pure code: no database, no web framework. The store appends entries one at a time
(serialised by a single writer or a lock, so the chain never forks) and hands
``verify_chain`` its rows ordered by ``seq``; exports and the CLI use the same functions.

Canonical encoding (``canonical_bytes``), precise enough to reimplement elsewhere
    The content of an entry is the JSON object of the 18 ``ENTRY_FIELDS``, all always
    present (absent optional values are ``null``, ``[]`` or ``{}``). It is encoded as
    UTF-8 JSON (RFC 8259) with no whitespace at all: ``,`` between members and elements,
    ``:`` between key and value. Object members are sorted by key, comparing keys as
    sequences of Unicode code points, at every depth. Strings are written raw (non-ASCII
    is not escaped) except ``"`` -> ``\\"``, ``\\`` -> ``\\\\``, U+0008 ``\\b``, U+0009
    ``\\t``, U+000A ``\\n``, U+000C ``\\f``, U+000D ``\\r`` and every other code point below
    U+0020 as ``\\u00xx`` (lowercase hex); ``/``, U+007F and U+2028/9 are not escaped.
    No Unicode normalisation is applied. Integers are plain decimal. Finite floats are
    written as Python's ``repr`` (shortest round-trip form: ``0.25``, ``1.0``, ``1e-07``);
    NaN and infinities are rejected; prefer integers in ``details``. ``true``, ``false``,
    ``null`` as usual; arrays keep their order. Only str keys, and only None, bool, int,
    float, str, list/tuple and mappings are accepted; lone surrogates are rejected.
    This is the byte string later leaves of the RFC 9162 Merkle tree are built from.

Hash construction (``compute_hash``)
    ``hash = lowercase_hex(SHA-256(prev_hash || 0x0A || canonical_bytes(content)))`` where
    ``prev_hash`` is the previous entry's hash as 64 lowercase ASCII hex characters and the
    first entry (seq 1) uses ``GENESIS_HASH`` (64 ``0``). ``prev_hash`` and ``hash`` are
    not part of the content.

Verification (``verify_chain``) streams the entries in the order given (the store gives
ORDER BY seq; ``start=ChainState`` carries on after a prefix already accepted, e.g. by the
fast range check of ``broker.core.chain_scan``), keeping O(1) state: the last accepted
entry, a bounded dict of the hashes of the last ``WINDOW`` accepted entries, and, once a
problem is found, up to ``WINDOW`` entries read ahead to classify it. It stops at the
first problem. With ``n`` the expected
seq (1, then last accepted + 1) and ``L`` the last accepted hash (``GENESIS_HASH`` at
first), an entry ``c`` is accepted when ``c.seq == n``, ``c.prev_hash == L`` and its hash
recomputes. Otherwise, first matching rule wins (``first_bad_seq`` in brackets; the
kinds are ``broker.core.tamper.TamperKind``, the words ``verify-export`` uses too):

1. ``c.prev_hash == L`` (it links to the right entry):
   seq is ``n`` -> **modified** [n] (its contents or stored hash were edited);
   hash valid, seq > n -> **deleted** [n] (entries deleted and the next one re-linked);
   hash valid, seq < n -> **inserted** [n] (a forged entry sealed with a used seq);
   an entry read ahead has seq ``n`` -> **reordered** [n] (seq numbers exchanged);
   else **modified** [n] (its seq was edited).
2. ``c.prev_hash`` is the hash of an earlier accepted entry ``k`` (a branch: ``c`` and
   entries ``k+1 .. n-1`` all follow ``k``; duplicate seqs and copied rows land here).
   Call ``c`` genuine when it is not an exact copy of the last entry and its hash
   verifies with its seq taken as ``k+1``. Genuine and renumbered (seq not ``k+1``), or
   genuine and the next entry or the expected head carries on from ``c``: the run
   ``k+1 .. n-1`` is **inserted** [k+1] (head rolls back to ``k``). Not genuine,
   ``c.seq == n`` and its hash invalid: **modified** [n] (its prev_hash was edited).
   Genuine and nothing carries on from either side: **inserted** [k+1], head ``k``
   (either sibling may be the forgery).
   Otherwise ``c`` is **inserted** [c.seq, clamped to k+1 .. n].
3. ``c.prev_hash`` is the hash of an entry read ahead (``c`` comes before its parent) and
   an entry read ahead links to ``L`` -> **reordered** [n]. This covers two entries
   swapped in the stream and two rows whose seq values were exchanged (the DB then
   returns them in swapped order).
4. An entry read ahead links to ``L`` (the real successor of the last entry is further
   on): if ``c.seq > n`` -> **reordered** [n]; else ``c`` is **inserted** [c.seq, or n].
5. ``c.seq > n`` -> **deleted** [n] (entries ``n .. c.seq-1`` were deleted; a deleted
   first entry is deleted [1]).
6. ``c.seq < n`` -> **inserted** [c.seq] (an extra entry linked to nothing known).
7. ``c.seq == n``, hash invalid -> **modified** [n].
8. ``c.seq == n``, hash valid but linked to an unknown hash: if ``n > 1`` and the next
   entry links to ``c`` (or there is none) the previous entry was **modified** and
   re-hashed [n-1] (head rolls back to ``n-2``); otherwise ``c`` itself was replaced by
   a forged entry -> **modified** [n].

Renumbering rows after a deletion or insertion changes their content, so it shows as
"modified" unless rules 1-4 recognise the link pattern first. Reorders or copies further
apart than ``WINDOW`` fall through to rules 4-8, still at the right seq.

The external head (``BROKER_HOME/audit.head``, written by the store after each commit)
adds two checks: if the log ends before ``expected_head.seq`` -> **truncated** [last +
1]; if the entry at ``expected_head.seq`` has another hash -> **forked** [head seq]
(history rewritten at or before it; no entry can be vouched for, head None), unless a
rule above already explains that entry. What the chain and head alone cannot do (signed
checkpoints over the Merkle tree, ``broker.core.checkpoint``, close these gaps for every
entry a checkpoint covers): without the head file, deleting the tail, appending forged
entries, and a full rewrite (an attacker recomputing every later hash from some entry
on) are all undetectable, because the result is a valid chain. With it, a rewrite is
detected only if it touches entries up to the recorded head; entries after the head
(appended since it was last written) can be truncated or rewritten unseen; and an
attacker who can also write the head file can rewrite it to match. The head is only as
fresh as its last write: a crash between commit and head write leaves it behind (safe,
not a false alarm); writing it before the commit would make a failed commit look like
truncation.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from broker.core.errors import InvalidInput
from broker.core.private_files import write_private
from broker.core.tamper import TamperKind

__all__ = [
    "ENTRY_FIELDS",
    "EVENTS",
    "GENESIS_HASH",
    "WINDOW",
    "AuditEntry",
    "ChainHead",
    "ChainState",
    "VerifyResult",
    "canonical_bytes",
    "compute_hash",
    "format_time",
    "read_head",
    "seal",
    "verify_chain",
    "write_head",
]

EVENTS: frozenset[str] = frozenset(
    {
        "consent.granted",
        "consent.withdrawn",
        "connection.revoked",
        "connection.confirmed",
        "transfer.pending",
        "transfer.delivered",
        "transfer.failed",
        "transfer.outcome_unknown",
        "transfer.cancelled",
        "transfer.late_outcome",
        "transfer.blocked",
        "token.refreshed",
        "key.rotated",
        "policy.changed",
        "policy.classified",
        "disclosure.legal",
        "console.login_failed",
        "preference.objected",
        "preference.withdrawn",
        "audit.verified",
        "log.format",
        "subject.erased",
    }
)
GENESIS_HASH: str = "0" * 64
ENTRY_FIELDS: tuple[str, ...] = (
    "seq",
    "time",
    "event",
    "actor",
    "user_id",
    "connector_id",
    "connection_id",
    "transfer_id",
    "consent_id",
    "categories",
    "field_paths",
    "purpose",
    "legal_basis",
    "payload_sha256",
    "payload_bytes",
    "destination",
    "outcome",
    "details",
)
WINDOW = 1024
"""Entries remembered behind, and read ahead after a problem, to classify it."""

_REQUIRED = ("seq", "time", "event", "actor")
_OPTIONAL_STR = (
    "user_id",
    "connector_id",
    "connection_id",
    "transfer_id",
    "consent_id",
    "purpose",
    "legal_basis",
    "payload_sha256",
    "destination",
    "outcome",
)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_HEAD_LINE = re.compile(r"(\d+) ([0-9a-f]{64})\n?")


def _bad(message: str, **details: Any) -> InvalidInput:
    return InvalidInput(message, details=details)


def _json_copy(value: Any, where: str) -> Any:
    """A copy of ``value`` made only of JSON types; raises InvalidInput otherwise."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(f"{where} holds a non-finite number", field=where)
        return value
    if isinstance(value, list | tuple):
        return [_json_copy(item, where) for item in value]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _bad(f"{where} has a non-string key", field=where)
            out[key] = _json_copy(item, where)
        return out
    raise _bad(f"{where} holds a {type(value).__name__}, which is not JSON", field=where)


def _dumps(content: Any) -> bytes:
    text = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def canonical_bytes(content: Mapping[str, Any]) -> bytes:
    """The canonical encoding of ``content`` (see the module docstring for the rules)."""
    try:
        return _dumps(_json_copy(content, "content"))
    except UnicodeEncodeError as exc:
        raise _bad("content holds a string that is not valid Unicode") from exc


def compute_hash(content: Mapping[str, Any], prev_hash: str) -> str:
    """Lowercase hex SHA-256 of ``prev_hash`` (ASCII) + ``"\\n"`` + ``canonical_bytes(content)``."""
    if not isinstance(prev_hash, str) or not _HEX64.fullmatch(prev_hash):
        raise _bad("prev_hash must be 64 lowercase hex characters", field="prev_hash")
    return _digest(prev_hash, canonical_bytes(content))


def _digest(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + body).hexdigest()


def format_time(dt: datetime) -> str:
    """``dt`` in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; naive datetimes are refused."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise _bad("audit times must be timezone-aware", field="time")
    # isoformat, not strftime: the same text, several times faster (on every append)
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """One sealed event. Construction checks types only; ``seal`` checks meaning."""

    seq: int
    time: str
    event: str
    actor: str
    user_id: str | None = None
    connector_id: str | None = None
    connection_id: str | None = None
    transfer_id: str | None = None
    consent_id: str | None = None
    categories: tuple[str, ...] = ()
    field_paths: tuple[str, ...] = ()
    purpose: str | None = None
    legal_basis: str | None = None
    payload_sha256: str | None = None
    payload_bytes: int | None = None
    destination: str | None = None
    outcome: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    prev_hash: str
    hash: str

    def __post_init__(self) -> None:
        seq_ref = self.seq if _is_int(self.seq) else None
        if seq_ref is None:
            raise _bad("audit entry seq must be an integer", field="seq")
        for name in ("time", "event", "actor", "prev_hash", "hash"):
            if not isinstance(getattr(self, name), str):
                raise _bad(f"audit entry {name} must be a string", field=name, seq=seq_ref)
        for name in _OPTIONAL_STR:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise _bad(f"audit entry {name} must be a string", field=name, seq=seq_ref)
        if self.payload_bytes is not None and not _is_int(self.payload_bytes):
            raise _bad("payload_bytes must be an integer", field="payload_bytes", seq=seq_ref)
        for name in ("categories", "field_paths"):
            value = getattr(self, name)
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise _bad(f"audit entry {name} must be strings", field=name, seq=seq_ref)
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.details, Mapping):
            raise _bad("audit entry details must be an object", field="details", seq=seq_ref)
        object.__setattr__(self, "details", _json_copy(self.details, "details"))

    def __hash__(self) -> int:
        return hash((self.seq, self.hash))

    def _content(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in ENTRY_FIELDS}
        out["categories"] = list(self.categories)
        out["field_paths"] = list(self.field_paths)
        return out

    def content(self) -> dict[str, Any]:
        """The ``ENTRY_FIELDS`` as a fresh JSON-safe dict: what the hash covers."""
        out = self._content()
        out["details"] = _json_copy(self.details, "details")
        return out

    def canonical(self) -> bytes:
        """``canonical_bytes(self.content())``: the bytes hashed and, later, Merkle-logged."""
        sealed = self.__dict__.get("_canonical")  # kept by ``seal``
        return sealed if sealed is not None else canonical_bytes(self._content())

    def to_row(self) -> dict[str, Any]:
        """``to_dict`` without copying ``details`` again: the values of a new row."""
        return {**self._content(), "prev_hash": self.prev_hash, "hash": self.hash}

    def to_dict(self) -> dict[str, Any]:
        """The export shape: content plus ``prev_hash`` and ``hash``."""
        return {**self.content(), "prev_hash": self.prev_hash, "hash": self.hash}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditEntry:
        """Rebuild an entry from ``to_dict`` output; unknown keys are refused."""
        unknown = sorted(set(d) - set(ENTRY_FIELDS) - {"prev_hash", "hash"})
        if unknown:
            raise _bad("audit entry has unknown fields", fields=unknown, seq=d.get("seq"))
        missing = [k for k in (*_REQUIRED, "prev_hash", "hash") if k not in d]
        if missing:
            raise _bad("audit entry lacks fields", fields=missing, seq=d.get("seq"))
        return cls(**d)


def _check_new(entry: AuditEntry) -> None:
    problems = []
    if entry.seq < 1:
        problems.append("seq must be at least 1")
    if entry.event not in EVENTS:
        problems.append(f"unknown event {entry.event!r}")
    if not _TIME.fullmatch(entry.time):
        problems.append("time must look like 2024-01-31T12:00:00.000000Z")
    if not entry.actor:
        problems.append("actor must not be empty")
    if entry.payload_sha256 is not None and not _HEX64.fullmatch(entry.payload_sha256):
        problems.append("payload_sha256 must be 64 lowercase hex characters")
    if entry.payload_bytes is not None and entry.payload_bytes < 0:
        problems.append("payload_bytes must not be negative")
    if not _HEX64.fullmatch(entry.prev_hash):
        problems.append("prev_hash must be 64 lowercase hex characters")
    elif (entry.seq == 1) != (entry.prev_hash == GENESIS_HASH):
        problems.append("entry 1, and only entry 1, follows GENESIS_HASH")
    if problems:
        raise _bad("cannot seal audit entry", problems=problems, seq=entry.seq)


def seal(content: Mapping[str, Any], prev_hash: str) -> AuditEntry:
    """A new entry from ``content`` (a subset of ENTRY_FIELDS) chained after ``prev_hash``."""
    unknown = sorted(set(content) - set(ENTRY_FIELDS))
    missing = [k for k in _REQUIRED if k not in content]
    if unknown or missing:
        raise _bad("cannot seal audit entry", unknown=unknown, missing=missing)
    entry = AuditEntry(**content, prev_hash=prev_hash, hash=GENESIS_HASH)
    _check_new(entry)
    body = canonical_bytes(entry._content())
    # Sealed in place (the draft is nobody else's yet), keeping the canonical bytes the
    # hash covers: the Merkle leaf of a new entry is the same bytes.
    object.__setattr__(entry, "hash", _digest(prev_hash, body))
    object.__setattr__(entry, "_canonical", body)
    return entry


@dataclass(frozen=True)
class ChainHead:
    """The last entry of the chain as recorded outside the database."""

    seq: int
    hash: str

    def __post_init__(self) -> None:
        if not _is_int(self.seq) or self.seq < 0:
            raise _bad("head seq must be a non-negative integer", field="seq")
        if not isinstance(self.hash, str) or not _HEX64.fullmatch(self.hash):
            raise _bad("head hash must be 64 lowercase hex characters", field="hash")
        if self.seq == 0 and self.hash != GENESIS_HASH:
            raise _bad("head 0 is the genesis hash", field="hash")


def read_head(path: Path) -> ChainHead | None:
    """The head in ``path`` (``"SEQ HASH\\n"``), or None if the file does not exist."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise _bad("audit head file is malformed", path=str(path)) from exc
    match = _HEAD_LINE.fullmatch(text)
    if match is None:
        raise _bad("audit head file is malformed", path=str(path))
    return ChainHead(int(match.group(1)), match.group(2))


def write_head(path: Path, head: ChainHead) -> None:
    """Replace ``path`` atomically with ``head`` (temp file, fsync, ``os.replace``), mode 0600."""
    write_private(Path(path), f"{head.seq} {head.hash}\n", encoding="ascii")


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``verify_chain``; ``head`` is the last entry that can be vouched for;
    ``problem`` a :class:`~broker.core.tamper.TamperKind` (``"error"`` when a run of
    ``broker.flows.integrity`` could not finish)."""

    ok: bool
    checked: int
    head: ChainHead | None
    first_bad_seq: int | None = None
    problem: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        head = None if self.head is None else {"seq": self.head.seq, "hash": self.head.hash}
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head": head,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "message": self.message,
        }


def _hash_ok(entry: AuditEntry) -> bool:
    try:
        return _digest(entry.prev_hash, _dumps(entry._content())) == entry.hash
    except (ValueError, UnicodeEncodeError):
        return False


def _head(seq: int, hash_: str) -> ChainHead | None:
    return ChainHead(seq, hash_) if seq >= 1 else None


@dataclass(frozen=True)
class _Last:
    seq: int
    hash: str
    prev_hash: str


_Verdict = tuple[int, TamperKind, str, ChainHead | None]


def _were(first: int, last: int) -> str:
    return f"entry {first} was" if first == last else f"entries {first} to {last} were"


def _classify(
    c: AuditEntry,
    ahead: list[AuditEntry],
    last: _Last,
    recent: Mapping[str, int],
    anchor: str | None,
) -> _Verdict:
    """Rules 1-8 of the module docstring, for an entry that does not fit after ``last``."""
    n = last.seq + 1
    here = _head(last.seq, last.hash)
    valid = _hash_ok(c)
    if c.prev_hash == last.hash:
        if c.seq == n:
            msg = f"entry {n} was changed: its contents do not match its hash"
            return n, TamperKind.MODIFIED, msg, here
        if valid and c.seq > n:
            gone = _were(n, c.seq - 1)
            return n, TamperKind.DELETED, f"{gone} deleted: entry {c.seq} links to {last.seq}", here
        if valid:
            msg = f"entry {n} was inserted: it is sealed as seq {c.seq}, after entry {last.seq}"
            return n, TamperKind.INSERTED, msg, here
        if any(d.seq == n for d in ahead):
            msg = f"entry {n} is out of order: the entry in its place was renumbered {c.seq}"
            return n, TamperKind.REORDERED, msg, here
        msg = f"entry {n} was changed: its seq reads {c.seq} and does not match its hash"
        return n, TamperKind.MODIFIED, msg, here
    k = recent.get(c.prev_hash)
    if k is not None:
        genuine = c.hash != last.hash and _hash_ok(replace(c, seq=k + 1))
        nxt = ahead[0].prev_hash if ahead else None
        if genuine and (c.seq != k + 1 or c.hash in (nxt, anchor)):
            msg = f"{_were(k + 1, last.seq)} inserted: entry {c.seq} and its successors follow {k}"
            return k + 1, TamperKind.INSERTED, msg, _head(k, c.prev_hash)
        if not genuine and not valid and c.seq == n:
            msg = f"entry {n} was changed: it links to entry {k} and does not match its hash"
            return n, TamperKind.MODIFIED, msg, here
        if genuine and last.hash not in (nxt, anchor):
            msg = f"entry {k + 1} was inserted: two entries follow entry {k}, either may be forged"
            return k + 1, TamperKind.INSERTED, msg, _head(k, c.prev_hash)
        seq = c.seq if k < c.seq <= n else n
        msg = f"entry {seq} was inserted: it links to entry {k}, which already has a successor"
        return seq, TamperKind.INSERTED, msg, here
    successor_ahead = any(d.prev_hash == last.hash for d in ahead)
    if successor_ahead and c.prev_hash in {d.hash for d in ahead}:
        msg = f"entry {n} is out of order: the entry in its place (seq {c.seq}) follows a later one"
        return n, TamperKind.REORDERED, msg, here
    if successor_ahead:
        if c.seq > n:
            msg = f"entry {n} is out of order: it appears after entry {c.seq}"
            return n, TamperKind.REORDERED, msg, here
        seq = c.seq if 1 <= c.seq <= n else n
        msg = f"entry {seq} was inserted: it links to nothing; the successor of {last.seq} follows"
        return seq, TamperKind.INSERTED, msg, here
    if c.seq > n:
        gone = _were(n, c.seq - 1)
        msg = f"{gone} deleted: entry {c.seq} follows entry {last.seq}"
        return n, TamperKind.DELETED, msg, here
    if c.seq < n:
        seq = max(c.seq, 1)
        msg = f"entry {seq} was inserted: a second entry claims seq {c.seq} and links to nothing"
        return seq, TamperKind.INSERTED, msg, here
    if not valid:
        msg = f"entry {n} was changed: its contents do not match its hash"
        return n, TamperKind.MODIFIED, msg, here
    if n > 1 and (not ahead or ahead[0].prev_hash == c.hash):
        msg = f"entry {n - 1} was changed and re-hashed: entry {n} recorded another hash for it"
        return n - 1, TamperKind.MODIFIED, msg, _head(n - 2, last.prev_hash)
    msg = f"entry {n} was replaced: it links to no entry and nothing links to it"
    return n, TamperKind.MODIFIED, msg, here


@dataclass(frozen=True)
class ChainState:
    """Where a pass stands after accepting entries ``1 .. seq`` (none of them the
    expected head with another hash): the last entry's ``hash`` and ``prev_hash``, and
    ``recent``, the hashes of the last ``min(seq + 1, WINDOW)`` accepted entries, oldest
    first (``GENESIS_HASH`` counts as entry 0). ``verify_chain(rest, start=state)`` then
    returns what one pass over the whole log returns."""

    seq: int
    hash: str
    prev_hash: str
    recent: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.recent) != min(self.seq + 1, WINDOW) or self.recent[-1] != self.hash:
            raise _bad("chain state: recent must end with hash and hold min(seq+1, WINDOW)")


def verify_chain(
    entries: Iterable[AuditEntry],
    *,
    expected_head: ChainHead | None = None,
    start: ChainState | None = None,
) -> VerifyResult:
    """Check the chain in one pass; stop at and locate the first problem (see module doc).
    ``start``: carry on after entries already accepted (``entries`` begin after it)."""
    it = iter(entries)
    if start is None:
        start = ChainState(0, GENESIS_HASH, GENESIS_HASH, (GENESIS_HASH,))
    last = _Last(start.seq, start.hash, start.prev_hash)
    first = start.seq - len(start.recent) + 1
    recent: dict[str, int] = {h: first + i for i, h in enumerate(start.recent)}
    order: deque[str] = deque(start.recent)
    checked = start.seq
    forked: ChainHead | None = None  # the expected head, once its entry has another hash

    def fork_result(head: ChainHead) -> VerifyResult:
        msg = (
            f"entry {head.seq} does not match the recorded head: the log was "
            f"rewritten at or before entry {head.seq}"
        )
        return VerifyResult(False, checked, None, head.seq, TamperKind.FORKED, msg)

    for c in it:
        checked += 1
        if c.seq == last.seq + 1 and c.prev_hash == last.hash and _hash_ok(c):
            if forked is not None:
                return fork_result(forked)
            last = _Last(c.seq, c.hash, c.prev_hash)
            recent[c.hash] = c.seq
            order.append(c.hash)
            if len(order) > WINDOW:
                recent.pop(order.popleft(), None)
            if expected_head is not None and c.seq == expected_head.seq:
                forked = expected_head if c.hash != expected_head.hash else None
            continue
        ahead = list(islice(it, WINDOW))
        seq, problem, message, head = _classify(
            c, ahead, last, recent, None if expected_head is None else expected_head.hash
        )
        if forked is not None and seq > forked.seq:
            return fork_result(forked)
        return VerifyResult(False, checked, head, seq, problem, message)
    if forked is not None:
        return fork_result(forked)
    head = _head(last.seq, last.hash)
    if expected_head is not None and last.seq < expected_head.seq:
        msg = (
            f"{_were(last.seq + 1, expected_head.seq)} cut off the end: the log stops at "
            f"entry {last.seq} but the recorded head is entry {expected_head.seq}"
        )
        return VerifyResult(False, checked, head, last.seq + 1, TamperKind.TRUNCATED, msg)
    return VerifyResult(True, checked, head)
