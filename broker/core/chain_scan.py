"""Fast verification of stored audit rows, range by range, for ``verify_chain`` to finish.

Pure code: no database, no web framework. ``verify_chain`` (``broker.core.audit_chain``)
checks ``AuditEntry`` objects and classifies the first problem; building those objects
and encoding each entry twice is most of its cost. This module checks the rows as the
store reads them (column tuples in ``ROW_FIELDS`` order), encoding each entry once and
building its Merkle leaf from the same bytes, and stops at the first row that
``verify_chain`` would not accept *as is*. The caller then hands ``verify_chain`` the
rest of the log with ``start=`` the state after the accepted prefix, so the result (and
the tamper vocabulary) is exactly what a single ``verify_chain`` pass gives.

Ranges are independent: an entry's hash depends only on its own content and its stored
``prev_hash``, so each range of seqs (``scan_range``) can be checked alone, in another
process, and ``join_scans`` checks the seams (each range's first ``prev_hash`` is the
previous range's last hash). A range starts after a multiple of ``BLOCK`` (a power of
two at least its length), so its leaves form complete subtrees of the RFC 9162 tree:
a range hands back the tree's right edge over its own leaves (and at each checkpoint
size inside it), and the joined edge is the tree's edge over the whole prefix.

A row is accepted exactly when ``verify_chain`` would accept the entry the store builds
from it (``AuditEntry`` of the row, then ``seq``, link and hash): ``seq`` is the
expected int, ``time``, ``event``, ``actor``, ``prev_hash`` and ``hash`` are strings,
the optional string fields are strings or null, ``payload_bytes`` an int or null,
``categories`` and ``field_paths`` lists of strings, ``details`` an object, the content
encodes (no NaN, no lone surrogate) and its hash recomputes.
"""

from __future__ import annotations

import hashlib
import json
import json.scanner
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.core.audit_chain import _OPTIONAL_STR as OPTIONAL_STR_FIELDS
from broker.core.audit_chain import ENTRY_FIELDS, GENESIS_HASH
from broker.core.merkle import Frontier

__all__ = [
    "BLOCK",
    "ROW_FIELDS",
    "Prefix",
    "RangeScan",
    "encode_row",
    "join_scans",
    "ranges",
    "scan_range",
]

BLOCK = 1 << 15
"""Entries per range: a power of two, so ranges are complete subtrees of the tree."""

ROW_FIELDS: tuple[str, ...] = (*ENTRY_FIELDS, "prev_hash", "hash")

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _c_chunks() -> Callable[[Any, int], Any] | None:
    """The C encoder ``json.dumps`` uses for the canonical options, called directly (no
    per-call wrapper), if this Python has it and it gives the same text."""
    try:
        # the C accelerators json.encoder imports from _json when present; typeshed
        # declares neither
        from json.encoder import (  # type: ignore[attr-defined]
            c_encode_basestring,
            c_make_encoder,
        )

        encoder = c_make_encoder(  # markers None: JSON parsed from text has no cycles
            None, _ENCODER.default, c_encode_basestring, None, ":", ",", True, False, False
        )
        sample = {"b": [1, 0.25, None, True, '\u00e9\n"'], "a": {"y": {}, "x": []}}
        if "".join(encoder(sample, 0)) != _ENCODER.encode(sample):
            return None
    except (ImportError, TypeError, ValueError):
        return None
    return encoder  # type: ignore[no-any-return]


_CHUNKS: Callable[[Any, int], Any] = _c_chunks() or (lambda obj, _: [_ENCODER.encode(obj)])
"""``"".join(_CHUNKS(obj, 0))`` is ``canonical_bytes``'s text of ``obj`` (JSON types only)."""
# typeshed types make_scanner's argument as make_scanner itself; it is the decoder whose
# options (parse_float, strict, ...) the scanner reads, as json.JSONDecoder passes itself
_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_QUOTE: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring", None) or (
    json.encoder.py_encode_basestring
)
"""A JSON string as ``json.dumps(..., ensure_ascii=False)`` writes it (what the encoder
above uses for keys and values)."""


def _loads(text: str) -> Any:
    """``json.loads(text)``, through the scanner directly for text with no padding."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


_STR, _NONE = str, type(None)
# positions of the optional string fields (the same list as the entry's own check)
_OPTIONAL_STR = frozenset(ENTRY_FIELDS.index(name) for name in OPTIONAL_STR_FIELDS)
_PAYLOAD_BYTES = ENTRY_FIELDS.index("payload_bytes")
_SIGNATURES: dict[tuple[type, ...], bool] = {}


def _signature_ok(sig: tuple[type, ...]) -> bool:
    """Whether a row whose columns have these types can be an ``AuditEntry`` (the JSON
    columns are still text here; their values are checked once parsed)."""
    ok = _SIGNATURES.get(sig)
    if ok is None:
        ok = len(sig) == len(ROW_FIELDS) and sig[0] is int
        for i, t in enumerate(sig[1:], 1):
            if i in _OPTIONAL_STR:
                ok = ok and t in (_STR, _NONE)
            elif i == _PAYLOAD_BYTES:
                ok = ok and t in (int, _NONE)
            else:  # time, event, actor, the JSON texts, prev_hash, hash
                ok = ok and t is _STR
        _SIGNATURES[sig] = ok
    return ok


class _Lists:
    """``categories`` / ``field_paths`` texts, which repeat: text -> the canonical
    encoding of the list of strings it holds, or None when it holds something else."""

    def __init__(self) -> None:
        self.seen: dict[str, str | None] = {}

    def __call__(self, text: str) -> str | None:
        try:
            return self.seen[text]
        except KeyError:
            pass
        value = _loads(text)
        ok = type(value) is list and all(type(v) is str for v in value)
        if len(self.seen) > 4096:
            self.seen.clear()
        self.seen[text] = "".join(_CHUNKS(value, 0)) if ok else None
        return self.seen[text]


def encode_row(row: Sequence[Any], lists: Callable[[str], str | None]) -> bytes | None:
    """``canonical_bytes`` of the content of a row (``ROW_FIELDS``) whose column types
    ``_signature_ok`` accepted, written member by member in the sorted order of the keys
    (``ENTRY_FIELDS`` sorted; a test holds the two together), twice as fast as encoding a
    dict;
    None when a JSON column holds the wrong type. Raises ValueError (bad JSON text, NaN, a
    lone surrogate) as ``canonical_bytes`` would refuse it."""
    (seq, time, event, actor, user_id, connector_id, connection_id, transfer_id, consent_id,
     cats, paths, purpose, legal, sha, size, dest, outcome, details, _p, _h) = row  # fmt: skip
    cats, paths, obj = lists(cats), lists(paths), _loads(details)
    if cats is None or paths is None or type(obj) is not dict:
        return None
    q, n = _QUOTE, "null"
    return (
        f'{{"actor":{q(actor)},"categories":{cats}'
        f',"connection_id":{n if connection_id is None else q(connection_id)}'
        f',"connector_id":{n if connector_id is None else q(connector_id)}'
        f',"consent_id":{n if consent_id is None else q(consent_id)}'
        f',"destination":{n if dest is None else q(dest)}'
        f',"details":{"".join(_CHUNKS(obj, 0))},"event":{q(event)},"field_paths":{paths}'
        f',"legal_basis":{n if legal is None else q(legal)}'
        f',"outcome":{n if outcome is None else q(outcome)}'
        f',"payload_bytes":{n if size is None else int.__repr__(size)}'
        f',"payload_sha256":{n if sha is None else q(sha)}'
        f',"purpose":{n if purpose is None else q(purpose)}'
        f',"seq":{int.__repr__(seq)},"time":{q(time)}'
        f',"transfer_id":{n if transfer_id is None else q(transfer_id)}'
        f',"user_id":{n if user_id is None else q(user_id)}}}'
    ).encode()


@dataclass(frozen=True)
class RangeScan:
    """What ``scan_range`` found in the rows of seqs ``start .. end``."""

    start: int
    end: int
    accepted: int = 0  # rows accepted in order from ``start``
    first_prev: str | None = None  # prev_hash of row ``start``, when it was accepted
    last_hash: str | None = None  # hash of the last accepted row
    edge: list[bytes] = field(default_factory=list)  # the tree's edge over accepted leaves
    edges_at: dict[int, list[bytes]] = field(default_factory=dict)  # at checkpoint sizes

    @property
    def complete(self) -> bool:
        return self.start + self.accepted - 1 == self.end


def ranges(first: int, last: int, block: int = BLOCK) -> Iterator[tuple[int, int]]:
    """``(start, end)`` seq ranges covering ``first .. last``, each within one block;
    lazily (a forged row with a huge seq must not make a list of them all)."""
    start = first
    while start <= last:
        end = min(last, ((start - 1) // block + 1) * block)
        yield start, end
        start = end + 1


def scan_range(
    rows: Iterable[Sequence[Any]],
    *,
    start: int,
    end: int,
    sizes: Iterable[int] = (),
    edge: list[bytes] | None = None,
) -> RangeScan:
    """Accept rows (``ROW_FIELDS`` order, the JSON columns as their stored text, ordered
    by seq) from seq ``start`` while each links to the one before and recomputes; stop
    at the first that does not, or after ``end``. ``start - 1`` must be a multiple of a
    power of two at least the range's length (``ranges`` gives such ranges); the first
    row's link is checked by ``join_scans``. ``sizes``: tree sizes whose edge to keep.
    ``edge``: instead, the tree's edge over entries ``1 .. start - 1`` (any ``start``):
    the edges returned are then of the whole tree."""
    wanted = {s for s in sizes if start <= s <= end}
    sha256, encode = hashlib.sha256, encode_row
    ok_sig = _SIGNATURES.get
    lists = _Lists()
    stack: list[bytes] = list(edge) if edge is not None else []
    origin = 1 if edge is not None else start  # seq of leaf index 0 in ``stack``'s tree
    edges_at: dict[int, list[bytes]] = {}
    seq, last, first_prev = start, None, None
    for row in rows:
        if type(row[0]) is not int or row[0] != seq or seq > end:
            break
        prev, digest = row[18], row[19]
        if last is not None and prev != last:
            break
        sig = tuple(map(type, row))
        if not (ok_sig(sig) or _signature_ok(sig)):
            break
        try:
            body = encode(row, lists)
            if body is None or sha256(prev.encode("ascii") + b"\n" + body).hexdigest() != digest:
                break
        except ValueError:  # bad JSON text, NaN, a lone surrogate (UnicodeError)
            break
        if last is None:
            first_prev = prev
        leaf = sha256(b"\x00" + body).digest()
        i = seq - origin
        while i & 1:
            leaf = sha256(b"\x01" + stack.pop() + leaf).digest()
            i >>= 1
        stack.append(leaf)
        if seq in wanted:
            edges_at[seq] = list(stack)
        last = digest
        seq += 1
    return RangeScan(start, end, seq - start, first_prev, last, stack, edges_at)


@dataclass
class Prefix:
    """The accepted prefix of the log: entries ``1 .. size`` link and recompute; the
    tree's edge over them; the first checkpoint size whose root differs."""

    size: int = 0
    hash: str = GENESIS_HASH
    tree: Frontier = field(default_factory=Frontier)
    differs: int | None = None
    stopped: bool = False  # a range did not join or was incomplete: nothing after counts

    def join(self, scan: RangeScan, roots: dict[int, bytes]) -> None:
        """Add ``scan`` (the range right after ``size``) to the prefix."""
        if self.stopped or scan.start != self.size + 1:
            self.stopped = True
            return
        if scan.accepted == 0 or scan.first_prev != self.hash:
            self.stopped = True
            return
        base = list(self.tree.hashes)
        for size, edge in sorted(scan.edges_at.items()):
            if self.differs is None and Frontier(size, base + edge).root() != roots[size]:
                self.differs = size
        self.tree = _graft(self.tree, scan.edge, scan.accepted)
        self.size += scan.accepted
        self.hash = scan.last_hash or self.hash
        self.stopped = not scan.complete


def _graft(tree: Frontier, edge: list[bytes], count: int) -> Frontier:
    """``tree`` followed by ``count`` leaves whose own edge is ``edge`` (``tree.size``
    is a multiple of a power of two at least ``count``)."""
    if count & (count - 1) or tree.size % (count * 2) == 0:  # not a power of two, or no merge
        return Frontier(tree.size + count, [*tree.hashes, *edge])
    hashes = list(tree.hashes)
    h = edge[0]
    index = tree.size // count
    while index & 1:
        h = hashlib.sha256(b"\x01" + hashes.pop() + h).digest()
        index >>= 1
    return Frontier(tree.size + count, [*hashes, h])


def join_scans(scans: Iterable[RangeScan], roots: dict[int, bytes]) -> Prefix:
    """The accepted prefix of ranges given in order from seq 1."""
    prefix = Prefix()
    for scan in scans:
        prefix.join(scan, roots)
    return prefix
