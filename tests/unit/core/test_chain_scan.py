"""The range scan over stored rows: it accepts exactly the entries ``verify_chain`` accepts,
its leaves are the Merkle leaves of ``canonical_bytes``, and joined ranges give the tree."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.audit_chain import (
    ENTRY_FIELDS,
    GENESIS_HASH,
    WINDOW,
    AuditEntry,
    ChainState,
    canonical_bytes,
    verify_chain,
)
from broker.core.chain_scan import ROW_FIELDS, join_scans, ranges, scan_range
from broker.core.errors import InvalidInput
from broker.core.merkle import Frontier, leaf_hash
from tests.unit.core.test_audit_chain import build_chain

JSON_COLUMNS = ("categories", "field_paths", "details")


def row_of(entry: AuditEntry | dict[str, Any]) -> tuple[Any, ...]:
    """The row a store reads: ``ROW_FIELDS`` order, JSON columns as SQLAlchemy writes them."""
    d = entry.to_dict() if isinstance(entry, AuditEntry) else entry
    return tuple(json.dumps(d[k]) if k in JSON_COLUMNS else d[k] for k in ROW_FIELDS)


def tree_of(entries: list[AuditEntry], size: int) -> Frontier:
    tree = Frontier()
    for e in entries[:size]:
        tree.append(leaf_hash(e.canonical()))
    return tree


CHAIN = list(build_chain(40))
ROOTS = {size: tree_of(CHAIN, size).root() for size in (1, 7, 16, 33, 40)}


def scan_all(rows: list[tuple[Any, ...]], block: int, roots: dict[int, bytes] = ROOTS):
    top = max((r[0] for r in rows if isinstance(r[0], int)), default=0)
    scans = [
        scan_range([r for r in rows if a <= r[0] <= b], start=a, end=b, sizes=roots)
        for a, b in ranges(1, top, block)
    ]
    return join_scans(scans, roots)


def test_ranges_are_aligned_blocks() -> None:
    assert list(ranges(1, 10, 4)) == [(1, 4), (5, 8), (9, 10)]
    assert list(ranges(6, 9, 4)) == [(6, 8), (9, 9)]
    assert list(ranges(1, 0, 4)) == []
    assert next(ranges(1, 10**18)) == (1, 1 << 15)  # lazily: a forged huge seq costs nothing


@pytest.mark.parametrize("block", [1, 2, 4, 8, 64])
def test_joined_ranges_accept_a_clean_chain_and_give_its_tree(block: int) -> None:
    prefix = scan_all([row_of(e) for e in CHAIN], block)
    assert (prefix.size, prefix.hash, prefix.differs) == (40, CHAIN[-1].hash, None)
    assert prefix.tree == tree_of(CHAIN, 40)


@pytest.mark.parametrize("block", [1, 4, 8])
def test_a_checkpoint_root_that_differs_is_found(block: int) -> None:
    roots = {**ROOTS, 16: b"\x00" * 32}
    assert scan_all([row_of(e) for e in CHAIN], block, roots).differs == 16


@pytest.mark.parametrize("block", [1, 4, 8])
@pytest.mark.parametrize("bad", [1, 4, 5, 9, 40])
def test_the_prefix_stops_before_the_first_entry_verify_chain_rejects(block: int, bad: int) -> None:
    rows = [row_of(e) for e in CHAIN]
    rows[bad - 1] = row_of({**CHAIN[bad - 1].to_dict(), "actor": "someone else"})
    prefix = scan_all(rows, block)
    assert prefix.size == bad - 1 and prefix.stopped
    assert verify_chain(CHAIN[: bad - 1]).checked == prefix.size


@pytest.mark.parametrize("block", [1, 4])
def test_a_seam_that_does_not_link_stops_the_prefix(block: int) -> None:
    rows = [row_of(e) for e in CHAIN]
    del rows[8]  # seq 9 gone: the range 9..12 starts at 10
    assert scan_all(rows, block).size == 8
    rows = [row_of(e) for e in CHAIN]
    rows[4:8] = [row_of(replace(e, prev_hash="a" * 64)) for e in CHAIN[4:5]] + rows[5:8]
    assert scan_all(rows, block).size == 4


def _readable(d: dict[str, Any]) -> bool:
    try:
        AuditEntry.from_dict(d)
    except InvalidInput:
        return False
    return True


ODD_VALUES = [None, 1, True, 1.5, "x", [], ["x"], [1], {}, {"a": 1}, "\ud800"]


@pytest.mark.parametrize("name", [*ENTRY_FIELDS[1:], "prev_hash"])
@pytest.mark.parametrize("value", ODD_VALUES)
def test_a_row_is_accepted_exactly_when_its_entry_is(name: str, value: Any) -> None:
    """Every column set to every kind of value, and the hash recomputed over it (an
    attacker can do that): accepted iff the store could build the entry and it verifies."""
    d = CHAIN[0].to_dict()
    d[name] = value
    readable = _readable(d)
    if readable:
        entry = AuditEntry.from_dict(d)
        try:
            from broker.core.audit_chain import compute_hash

            d["hash"] = compute_hash(entry.content(), GENESIS_HASH)
        except InvalidInput:
            readable = False
    row = row_of(d) if name not in JSON_COLUMNS or _json_ok(value) else None
    if row is None:
        return
    accepted = scan_range([row], start=1, end=1).accepted == 1
    expected = readable and verify_chain([AuditEntry.from_dict(d)]).ok
    assert accepted == expected


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value).encode()
    except (TypeError, ValueError):
        return False
    return True


def test_json_texts_that_are_not_the_right_type_are_refused() -> None:
    base = list(row_of(CHAIN[0]))
    for i, text in ((9, '"x"'), (10, "[1]"), (17, "[1]"), (17, "NaN"), (9, "null")):
        row = list(base)
        row[i] = text
        assert scan_range([tuple(row)], start=1, end=1).accepted == 0, (i, text)
    row = list(base)
    row[17] = " " + row[17] + "\n"  # the same value as json.loads reads it: accepted
    assert scan_range([tuple(row)], start=1, end=1).accepted == 1


JSON_TEXT = st.text(st.characters(codec="utf-8"), max_size=8)
JSON_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | JSON_TEXT,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(JSON_TEXT, kids, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    purpose=st.none() | JSON_TEXT,
    categories=st.lists(JSON_TEXT, max_size=3),
    details=st.dictionaries(JSON_TEXT, JSON_VALUE, max_size=4),
)
def test_the_scan_encodes_like_canonical_bytes(purpose, categories, details) -> None:
    from broker.core.audit_chain import seal

    entry = seal(
        {**CHAIN[0].content(), "purpose": purpose, "categories": categories, "details": details},
        GENESIS_HASH,
    )
    scan = scan_range([row_of(entry)], start=1, end=1)
    assert scan.accepted == 1
    assert scan.edge == [leaf_hash(canonical_bytes(entry.content()))]


def test_chain_state_resumes_a_pass() -> None:
    chain = list(build_chain(WINDOW + 50))
    for m in (0, 1, 10, WINDOW - 1, WINDOW, WINDOW + 20):
        hashes = [GENESIS_HASH, *(e.hash for e in chain[:m])][-WINDOW:]
        prev = chain[m - 1].prev_hash if m else GENESIS_HASH
        state = ChainState(m, hashes[-1], prev, tuple(hashes))
        assert verify_chain(chain[m:], start=state) == verify_chain(chain)
        # a copy of an early entry is classified the same way after a resume
        forged = [*chain[:m], *chain[m : m + 5], replace(chain[m + 2], seq=m + 6)]
        assert verify_chain(forged[m:], start=state) == verify_chain(forged)
    with pytest.raises(InvalidInput):
        ChainState(5, "a" * 64, "b" * 64, ("a" * 64,))


def test_encode_row_writes_the_members_in_the_order_of_the_entry_fields() -> None:
    """``encode_row`` unpacks ``ROW_FIELDS`` by position and writes the keys sorted."""
    import inspect

    from broker.core.chain_scan import encode_row

    source = inspect.getsource(encode_row)
    written = [k for k in re.findall(r'"(\w+)":\{', source)]
    assert written == sorted(ENTRY_FIELDS)
    unpacked = re.search(r"\(seq,(.*?)\) = row", source, re.S).group(1)
    names = ["seq", *(n.strip() for n in unpacked.split(",") if n.strip())]
    renamed = {
        "cats": "categories", "paths": "field_paths", "legal": "legal_basis",
        "sha": "payload_sha256", "size": "payload_bytes", "dest": "destination",
        "_p": "prev_hash", "_h": "hash",
    }  # fmt: skip
    assert [renamed.get(n, n) for n in names] == list(ROW_FIELDS)
