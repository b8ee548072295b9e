"""The audit hash chain: encoding, sealing, head file, and detection of each tampering."""

from __future__ import annotations

import hashlib
import json
import math
import stat
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from broker.core.audit_chain import (
    ENTRY_FIELDS,
    EVENTS,
    GENESIS_HASH,
    WINDOW,
    AuditEntry,
    ChainHead,
    VerifyResult,
    canonical_bytes,
    compute_hash,
    format_time,
    read_head,
    seal,
    verify_chain,
    write_head,
)
from broker.core.errors import InvalidInput

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CYCLE = sorted(EVENTS)


def content_for(seq: int) -> dict[str, Any]:
    event = CYCLE[seq % len(CYCLE)]
    content: dict[str, Any] = {
        "seq": seq,
        "time": format_time(T0 + timedelta(seconds=seq, microseconds=seq)),
        "event": event,
        "actor": f"key_{seq % 3}",
        "user_id": f"u{seq % 4}",
        "connector_id": "example",
        "connection_id": f"c{seq % 5}",
    }
    if event.startswith("transfer."):
        content |= {
            "transfer_id": f"t{seq}",
            "consent_id": "cs1",
            "categories": ("user.name", "user.contact.email"),
            "field_paths": ("name", "email"),
            "purpose": "Post work item updates",
            "legal_basis": "consent",
            "payload_sha256": hashlib.sha256(str(seq).encode()).hexdigest(),
            "payload_bytes": 100 + seq,
            "destination": "https://api.example.com/messages",
            "outcome": event.split(".")[1],
            "details": {"status": 200, "attempts": 1, "reason": None},
        }
    return content


def build_chain(count: int) -> Iterator[AuditEntry]:
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        entry = seal(content_for(seq), prev)
        prev = entry.hash
        yield entry


CHAIN: tuple[AuditEntry, ...] = tuple(build_chain(20))


def chain() -> list[AuditEntry]:
    return list(CHAIN)


def by_seq(entries: list[AuditEntry]) -> list[AuditEntry]:
    """What a store returns: ORDER BY seq (ties kept in insertion order)."""
    return sorted(entries, key=lambda e: e.seq)


def head_of(entry: AuditEntry) -> ChainHead:
    return ChainHead(entry.seq, entry.hash)


def assert_bad(result: VerifyResult, seq: int, problem: str) -> None:
    assert not result.ok
    assert (result.first_bad_seq, result.problem) == (seq, problem), result.message
    assert result.message and str(seq) in result.message


# --- intact ---------------------------------------------------------------------------


def test_intact_chain_verifies() -> None:
    result = verify_chain(CHAIN)
    assert result == VerifyResult(True, 20, head_of(CHAIN[-1]))
    assert result.first_bad_seq is None and result.problem is None


def test_empty_log_verifies() -> None:
    assert verify_chain([]) == VerifyResult(True, 0, None)
    assert verify_chain([], expected_head=ChainHead(0, GENESIS_HASH)).ok


def test_verify_streams_a_long_generator() -> None:
    result = verify_chain(build_chain(3000), expected_head=ChainHead(2500, "a" * 64))
    assert_bad(result, 2500, "forked")
    assert verify_chain(build_chain(3000)).checked == 3000


def test_verify_stops_at_first_problem_and_reads_a_bounded_window() -> None:
    pulled = 0

    def stream() -> Iterator[AuditEntry]:
        nonlocal pulled
        for entry in build_chain(3000):
            pulled += 1
            yield replace(entry, purpose="x") if entry.seq == 10 else entry

    result = verify_chain(stream())
    assert_bad(result, 10, "modified")
    assert result.checked == 10
    assert pulled <= 10 + WINDOW


def test_head_behind_the_log_is_fine() -> None:
    assert verify_chain(CHAIN, expected_head=head_of(CHAIN[14])).ok
    assert verify_chain(CHAIN, expected_head=head_of(CHAIN[-1])).ok


# --- modified -------------------------------------------------------------------------


def test_changed_field_in_middle_entry() -> None:
    entries = chain()
    entries[9] = replace(entries[9], purpose="Something else")
    result = verify_chain(entries)
    assert_bad(result, 10, "modified")
    assert result.head == head_of(CHAIN[8])


def test_changed_and_rehashed_entry_is_located_by_its_successor() -> None:
    entries = chain()
    entries[9] = seal({**entries[9].content(), "actor": "intruder"}, entries[8].hash)
    result = verify_chain(entries)
    assert_bad(result, 10, "modified")
    assert result.head == head_of(CHAIN[8])


def test_entry_replaced_by_forgery_linked_to_nothing() -> None:
    entries = chain()
    entries[9] = seal(entries[9].content(), "f" * 64)
    assert_bad(verify_chain(entries), 10, "modified")


@pytest.mark.parametrize("parent", [None, 0, 4, 15])
def test_prev_hash_pointed_elsewhere_is_changed(parent: int | None) -> None:
    entries = chain()
    target = GENESIS_HASH if parent is None else CHAIN[parent].hash
    entries[9] = replace(entries[9], prev_hash=target)
    assert_bad(verify_chain(entries), 10, "modified")
    entries = chain()
    entries[-1] = replace(entries[-1], prev_hash=target)
    assert_bad(verify_chain(entries), 20, "modified")


def test_changed_first_and_last_entries() -> None:
    first = chain()
    first[0] = replace(first[0], actor="someone")
    assert_bad(verify_chain(first), 1, "modified")
    last = chain()
    last[-1] = replace(last[-1], details={"status": 500})
    assert_bad(verify_chain(last), 20, "modified")


# --- deleted --------------------------------------------------------------------------


def test_deleted_middle_entry() -> None:
    entries = chain()
    del entries[9]
    result = verify_chain(entries)
    assert_bad(result, 10, "deleted")
    assert result.head == head_of(CHAIN[8])


def test_deleted_first_entry() -> None:
    result = verify_chain(CHAIN[1:])
    assert_bad(result, 1, "deleted")
    assert result.head is None


def test_deleted_run_names_the_range() -> None:
    entries = chain()
    del entries[9:12]
    result = verify_chain(entries)
    assert_bad(result, 10, "deleted")
    assert "10 to 12" in (result.message or "")


def test_deletion_with_successor_relinked() -> None:
    entries = chain()
    del entries[9]
    entries[9] = seal(entries[9].content(), entries[8].hash)  # seq 11 now follows 9
    assert_bad(verify_chain(entries), 10, "deleted")


# --- inserted -------------------------------------------------------------------------


def forged(seq: int, prev_hash: str) -> AuditEntry:
    return seal({**content_for(seq), "destination": "https://evil.example"}, prev_hash)


@pytest.mark.parametrize("before_genuine", [True, False])
def test_inserted_entry_with_duplicate_seq(before_genuine: bool) -> None:
    entries = chain()
    x = forged(11, entries[9].hash)  # correctly chained to entry 10; later entries untouched
    entries.insert(10 if before_genuine else 11, x)
    result = verify_chain(by_seq(entries))
    assert_bad(result, 11, "inserted")
    assert result.head == (head_of(CHAIN[9]) if before_genuine else head_of(CHAIN[10]))


def test_inserted_entry_with_later_rows_renumbered() -> None:
    entries = chain()
    x = forged(11, entries[9].hash)
    tail = [replace(e, seq=e.seq + 1) for e in entries[10:]]
    result = verify_chain([*entries[:10], x, *tail])
    assert_bad(result, 11, "inserted")
    assert result.head == head_of(CHAIN[9])


def test_inserted_run_of_forged_entries() -> None:
    entries = chain()
    run = [forged(11, entries[9].hash)]
    for seq in (12, 13):
        run.append(forged(seq, run[-1].hash))
    tail = [replace(e, seq=e.seq + 3) for e in entries[10:]]
    result = verify_chain([*entries[:10], *run, *tail])
    assert_bad(result, 11, "inserted")
    assert "11 to 13" in (result.message or "")
    assert result.head == head_of(CHAIN[9])


def test_inserted_entry_linked_to_nothing() -> None:
    entries = chain()
    junk = forged(11, "e" * 64)
    assert_bad(verify_chain(by_seq([*entries, junk])), 11, "inserted")
    tail = [replace(e, seq=e.seq + 1) for e in entries[10:]]
    assert_bad(verify_chain([*entries[:10], junk, *tail]), 11, "inserted")


def test_duplicated_row() -> None:
    entries = chain()
    entries.insert(10, entries[9])
    result = verify_chain(entries)
    assert_bad(result, 10, "inserted")
    assert result.head == head_of(CHAIN[9])


def test_forged_second_genesis() -> None:
    entries = chain()
    entries.insert(1, forged(1, GENESIS_HASH))
    assert_bad(verify_chain(entries), 1, "inserted")


# --- reordered ------------------------------------------------------------------------


def test_adjacent_entries_swapped_in_stream() -> None:
    entries = chain()
    entries[9], entries[10] = entries[10], entries[9]  # both keep their seq
    result = verify_chain(entries)
    assert_bad(result, 10, "reordered")
    assert result.head == head_of(CHAIN[8])


def test_distant_entries_swapped_in_stream() -> None:
    entries = chain()
    entries[9], entries[14] = entries[14], entries[9]
    assert_bad(verify_chain(entries), 10, "reordered")


@pytest.mark.parametrize("order", [by_seq, list])
def test_adjacent_entries_seq_numbers_swapped(order: Any) -> None:
    entries = chain()
    entries[9], entries[10] = replace(entries[9], seq=11), replace(entries[10], seq=10)
    result = verify_chain(order(entries))
    assert_bad(result, 10, "reordered")
    assert result.head == head_of(CHAIN[8])


def test_distant_entries_seq_numbers_swapped() -> None:
    entries = chain()
    entries[4], entries[16] = replace(entries[4], seq=17), replace(entries[16], seq=5)
    assert_bad(verify_chain(by_seq(entries)), 5, "reordered")


def test_entry_moved_further_than_the_window() -> None:
    entries = list(build_chain(WINDOW + 80))
    moved = entries.pop(WINDOW + 40)  # its parent is now out of reach of the read-ahead
    entries.insert(9, moved)
    assert_bad(verify_chain(entries), 10, "reordered")


def test_entry_moved_to_the_end() -> None:
    entries = chain()
    entries[9] = replace(entries[9], seq=21)
    assert_bad(verify_chain(by_seq(entries)), 10, "reordered")


# --- truncated and forked -------------------------------------------------------------


def test_truncated_tail_detected_with_head() -> None:
    result = verify_chain(CHAIN[:15], expected_head=head_of(CHAIN[-1]))
    assert_bad(result, 16, "truncated")
    assert result.head == head_of(CHAIN[14])
    assert "16 to 20" in (result.message or "")
    assert verify_chain(CHAIN[:15]).ok  # documented: without the head, undetectable


def test_emptied_log_with_head_is_truncated() -> None:
    assert_bad(verify_chain([], expected_head=head_of(CHAIN[-1])), 1, "truncated")


def rewrite_from(index: int) -> list[AuditEntry]:
    """A full rewrite: entries from ``index`` on changed and every later hash recomputed."""
    entries = chain()[:index]
    prev = entries[-1].hash if entries else GENESIS_HASH
    for original in CHAIN[index:]:
        entries.append(seal({**original.content(), "outcome": "rewritten"}, prev))
        prev = entries[-1].hash
    return entries


def test_full_rewrite_is_forked_against_head() -> None:
    result = verify_chain(rewrite_from(5), expected_head=head_of(CHAIN[14]))
    assert_bad(result, 15, "forked")
    assert result.head is None


def test_full_rewrite_undetectable_without_head_or_after_it() -> None:
    assert verify_chain(rewrite_from(5)).ok
    assert verify_chain(rewrite_from(16), expected_head=head_of(CHAIN[14])).ok


def test_forked_head_entry() -> None:
    entries = rewrite_from(19)  # only the last entry replaced, correctly chained
    assert_bad(verify_chain(entries, expected_head=head_of(CHAIN[-1])), 20, "forked")


def test_forked_wins_over_later_damage() -> None:
    entries = rewrite_from(5)
    entries[17] = replace(entries[17], purpose="x")
    assert_bad(verify_chain(entries, expected_head=head_of(CHAIN[14])), 15, "forked")


def test_insertion_at_head_seq_is_inserted_not_forked() -> None:
    entries = chain()
    entries.insert(19, forged(20, entries[18].hash))
    result = verify_chain(entries, expected_head=head_of(CHAIN[-1]))
    assert_bad(result, 20, "inserted")
    assert result.head == head_of(CHAIN[18])  # the head file says which sibling is real
    ambiguous = verify_chain(entries)
    assert_bad(ambiguous, 20, "inserted")
    assert ambiguous.head == head_of(CHAIN[18])  # without it, neither is vouched for


def test_earlier_damage_reported_before_head_checks() -> None:
    entries = chain()[:15]
    entries[3] = replace(entries[3], actor="x")
    assert_bad(verify_chain(entries, expected_head=head_of(CHAIN[-1])), 4, "modified")


# --- any single-field change is detected ----------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
optional_text = st.none() | st.text(max_size=30)
hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
known_hashes = st.sampled_from([GENESIS_HASH, *(e.hash for e in CHAIN)])
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "seq": st.integers(-3, 10**6),
    "time": st.text(max_size=30),
    "event": st.sampled_from(CYCLE) | st.text(max_size=20),
    "actor": st.text(max_size=20),
    "categories": st.lists(st.text(max_size=12), max_size=3).map(tuple),
    "field_paths": st.lists(st.text(max_size=12), max_size=3).map(tuple),
    "payload_bytes": st.none() | st.integers(min_value=0),
    "details": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    "prev_hash": known_hashes | hexes | st.text(max_size=70),
    "hash": known_hashes | hexes | st.text(max_size=70),
}
MODIFIABLE = (*ENTRY_FIELDS, "prev_hash", "hash")


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_single_field_change_is_detected(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(CHAIN) - 1), label="index")
    name = data.draw(st.sampled_from(MODIFIABLE), label="field")
    old = getattr(CHAIN[index], name)
    new = data.draw(FIELD_VALUES.get(name, optional_text), label="value")
    assume(json.dumps(new, sort_keys=True) != json.dumps(old, sort_keys=True))
    entries = chain()
    entries[index] = replace(entries[index], **{name: new})
    seq = index + 1
    result = verify_chain(entries)
    assert not result.ok
    assert (result.first_bad_seq, result.problem) == (seq, "modified"), result.message
    assert result.head == (head_of(CHAIN[index - 1]) if index else None)
    stored = verify_chain(by_seq(entries))  # a changed seq moves the row in ORDER BY seq
    assert not stored.ok
    assert stored.first_bad_seq is not None and stored.first_bad_seq <= seq


# --- canonical encoding ---------------------------------------------------------------

GOLDEN_ENTRY = {
    "seq": 7,
    "time": "2024-05-01T12:00:07.000007Z",
    "event": "transfer.delivered",
    "actor": "key_1",
    "user_id": "u3",
    "connector_id": "example",
    "connection_id": "c2",
    "transfer_id": "t7",
    "consent_id": "cs1",
    "categories": ["user.name", "user.contact.email"],
    "field_paths": ["name", "email"],
    "purpose": "Post work item updates — ünïcode",
    "legal_basis": "consent",
    "payload_sha256": "7902699be42c8a8e46fbbb4501726517e86b22c56a189f7625a6da49081b2451",
    "payload_bytes": 107,
    "destination": "https://api.example.com/messages",
    "outcome": "delivered",
    "details": {"status": 200, "attempts": 2, "reason": None, "z": [1, "a\n"]},
}
GOLDEN_BYTES = (
    '{"actor":"key_1","categories":["user.name","user.contact.email"],"connection_id":"c2",'
    '"connector_id":"example","consent_id":"cs1","destination":"https://api.example.com/messages",'
    '"details":{"attempts":2,"reason":null,"status":200,"z":[1,"a\\n"]},"event":"transfer.delivered",'
    '"field_paths":["name","email"],"legal_basis":"consent","outcome":"delivered",'
    '"payload_bytes":107,'
    '"payload_sha256":"7902699be42c8a8e46fbbb4501726517e86b22c56a189f7625a6da49081b2451",'
    '"purpose":"Post work item updates — ünïcode","seq":7,"time":"2024-05-01T12:00:07.000007Z",'
    '"transfer_id":"t7","user_id":"u3"}'
).encode()
GOLDEN_PREV = "ab" * 32
GOLDEN_HASH = "6e7785495c7c00c5af0d055507627e7f9e96b6d84edb26a2bb917cfc66bd3088"


def test_canonical_encoding_is_stable() -> None:
    assert canonical_bytes(GOLDEN_ENTRY) == GOLDEN_BYTES
    assert compute_hash(GOLDEN_ENTRY, GOLDEN_PREV) == GOLDEN_HASH
    entry = seal(GOLDEN_ENTRY, GOLDEN_PREV)
    assert entry.hash == GOLDEN_HASH
    assert entry.canonical() == GOLDEN_BYTES
    assert entry.content() == GOLDEN_ENTRY


def test_hash_construction_is_as_documented() -> None:
    body = canonical_bytes(GOLDEN_ENTRY)
    expected = hashlib.sha256(GOLDEN_PREV.encode("ascii") + b"\n" + body).hexdigest()
    assert compute_hash(GOLDEN_ENTRY, GOLDEN_PREV) == expected


def test_canonical_bytes_ignores_key_order_and_tuple_vs_list() -> None:
    a = {"b": (1, 2), "a": {"y": 1, "x": "é"}}
    b = {"a": {"x": "é", "y": 1}, "b": [1, 2]}
    assert canonical_bytes(a) == canonical_bytes(b) == '{"a":{"x":"é","y":1},"b":[1,2]}'.encode()


@pytest.mark.parametrize(
    "bad",
    [
        {"x": math.nan},
        {"x": [math.inf]},
        {"x": {1: "a"}},
        {"x": {"a", "b"}},
        {"x": b"bytes"},
        {"x": "\ud800"},
        {"x": T0},
    ],
)
def test_canonical_bytes_rejects_non_json(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        canonical_bytes(bad)


def test_compute_hash_rejects_bad_prev_hash() -> None:
    with pytest.raises(InvalidInput):
        compute_hash({}, "AB" * 32)


# --- entries, sealing, time -----------------------------------------------------------


def test_format_time() -> None:
    paris = timezone(timedelta(hours=2))
    assert format_time(datetime(2024, 5, 1, 14, 0, 1, 5, tzinfo=paris)) == (
        "2024-05-01T12:00:01.000005Z"
    )
    with pytest.raises(InvalidInput):
        format_time(datetime(2024, 5, 1))


def test_entry_fields_and_events() -> None:
    assert ENTRY_FIELDS[:4] == ("seq", "time", "event", "actor")
    assert len(ENTRY_FIELDS) == 18
    assert {"policy.changed", "key.rotated", "transfer.outcome_unknown"} <= EVENTS
    assert {"transfer.cancelled", "transfer.late_outcome"} <= EVENTS
    assert "disclosure.legal" in EVENTS
    assert GENESIS_HASH == "0" * 64


def test_seal_defaults_and_round_trip() -> None:
    entry = seal(
        {"seq": 1, "time": format_time(T0), "event": "key.rotated", "actor": "admin"}, GENESIS_HASH
    )
    assert entry.categories == () and entry.details == {} and entry.user_id is None
    assert list(entry.content()) == list(ENTRY_FIELDS)
    exported = json.loads(json.dumps(entry.to_dict()))
    assert AuditEntry.from_dict(exported) == entry
    assert verify_chain([AuditEntry.from_dict(exported)]).ok


def test_entry_is_immutable_through_its_content() -> None:
    entry = CHAIN[2]
    entry.content()["details"]["status"] = 500
    source = {"status": 200}
    copy = replace(CHAIN[2], details=source)
    source["status"] = 500
    assert copy.details == {"status": 200}
    assert verify_chain(CHAIN).ok
    assert hash(entry) == hash(replace(entry))


@pytest.mark.parametrize(
    ("change", "prev"),
    [
        ({"event": "transfer.sold"}, GENESIS_HASH),
        ({"time": "2024-05-01 12:00:00"}, GENESIS_HASH),
        ({"seq": 0}, GENESIS_HASH),
        ({"seq": 2}, GENESIS_HASH),
        ({}, "a" * 64),
        ({"actor": ""}, GENESIS_HASH),
        ({"payload_sha256": "xyz"}, GENESIS_HASH),
        ({"payload_bytes": -1}, GENESIS_HASH),
        ({"colour": "red"}, GENESIS_HASH),
        ({"details": {"x": math.nan}}, GENESIS_HASH),
        ({"categories": "user.name"}, GENESIS_HASH),
    ],
)
def test_seal_refuses_bad_content(change: dict[str, Any], prev: str) -> None:
    base = {"seq": 1, "time": format_time(T0), "event": "key.rotated", "actor": "admin"}
    with pytest.raises(InvalidInput):
        seal(base | change, prev)


def test_seal_refuses_missing_required_field() -> None:
    with pytest.raises(InvalidInput):
        seal({"seq": 1, "time": format_time(T0), "event": "key.rotated"}, GENESIS_HASH)


def test_from_dict_refuses_unknown_and_missing_fields() -> None:
    exported = CHAIN[0].to_dict()
    with pytest.raises(InvalidInput):
        AuditEntry.from_dict({**exported, "signature": "x"})
    del exported["hash"]
    with pytest.raises(InvalidInput):
        AuditEntry.from_dict(exported)
    with pytest.raises(InvalidInput):
        AuditEntry.from_dict({**CHAIN[0].to_dict(), "seq": "1"})


def test_verify_result_to_dict() -> None:
    good = verify_chain(CHAIN).to_dict()
    assert good == {
        "ok": True,
        "checked": 20,
        "head": {"seq": 20, "hash": CHAIN[-1].hash},
        "first_bad_seq": None,
        "problem": None,
        "message": None,
    }
    bad = verify_chain(CHAIN[1:]).to_dict()
    assert (bad["ok"], bad["head"], bad["first_bad_seq"], bad["problem"]) == (
        False,
        None,
        1,
        "deleted",
    )
    json.dumps(bad)


# --- head file ------------------------------------------------------------------------


def test_head_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "audit.head"
    assert read_head(path) is None
    write_head(path, head_of(CHAIN[4]))
    write_head(path, head_of(CHAIN[-1]))
    assert path.read_text() == f"20 {CHAIN[-1].hash}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_head(path) == head_of(CHAIN[-1])
    assert [p.name for p in tmp_path.iterdir()] == ["audit.head"]


@pytest.mark.parametrize(
    "text", ["", "20\n", f"x {'a' * 64}\n", f"20 {'A' * 64}\n", "20 abc\n", f"0 {'a' * 64}\n"]
)
def test_malformed_head_file_is_an_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "audit.head"
    path.write_text(text)
    with pytest.raises(InvalidInput):
        read_head(path)


def test_chain_head_validation() -> None:
    with pytest.raises(InvalidInput):
        ChainHead(-1, "a" * 64)
    with pytest.raises(InvalidInput):
        ChainHead(3, "zz")
    assert ChainHead(0, GENESIS_HASH).seq == 0
