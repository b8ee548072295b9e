"""The parsers behind "no input makes a 500": each refuses with a broker error, never an
OverflowError, RecursionError or UnicodeEncodeError (issue 9, point 5)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from broker.core.errors import InvalidInput, ProviderError, SessionInvalid
from broker.core.oauth import MAX_EXPIRES_IN, TokenSet
from broker.flows.audit import TransferFilter
from broker.flows.connection_setup import encode_settings, settings_in_token
from broker.flows.paging import decode_cursor
from broker.web.api.transfers import MAX_JSON_DEPTH, _check_strings_and_depth, _finite

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "value",
    [10**12, MAX_EXPIRES_IN + 1, -1, 1e300, float("inf"), True, "soon", "-5", "9" * 40, "٣٦٠٠"],
)
def test_absurd_expires_in_is_a_provider_error(value: object) -> None:
    with pytest.raises(ProviderError, match="expires_in"):
        TokenSet.from_response({"access_token": "a", "expires_in": value}, now=NOW)


@pytest.mark.parametrize(("value", "seconds"), [(3600, 3600), ("120", 120), (60.0, 60), (0, 0)])
def test_sane_expires_in_is_taken(value: object, seconds: int) -> None:
    tokens = TokenSet.from_response({"access_token": "a", "expires_in": value}, now=NOW)
    assert tokens.expires_at == NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "cursor",
    [
        _b64(json.dumps(["9999-12-31T23:59:59-23:59", "trf_1"]).encode()),
        _b64(json.dumps(["0001-01-01T00:00:00+23:59", "trf_1"]).encode()),
        _b64(json.dumps(["2026-01-01T00:00:00", "trf_1"]).encode()),  # no zone
        _b64(json.dumps(["2026-01-01T00:00:00Z", 7]).encode()),
        _b64(json.dumps([1, "trf_1"]).encode()),
        _b64(b"[" * 370),
        _b64(b"\xff\xfe"),
        "!!!",
    ],
)
def test_bad_cursor_is_invalid_input(cursor: str) -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        decode_cursor(cursor)


def test_cursor_times_come_back_in_utc() -> None:
    created, tid = decode_cursor(_b64(json.dumps(["2026-01-01T02:00:00+02:00", "t"]).encode()))
    assert created == NOW and created.tzinfo == UTC and tid == "t"


def test_filter_times_must_be_aware_and_in_range() -> None:
    with pytest.raises(InvalidInput, match="time zone"):
        TransferFilter(since=datetime(2026, 1, 1))  # no zone: refused
    for value in (
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=23, minutes=59))),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59))),
    ):
        with pytest.raises(InvalidInput, match="out of range"):
            TransferFilter(until=value)
    flt = TransferFilter(since=datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))))
    assert flt.since == NOW and flt.since.tzinfo == UTC


@pytest.mark.parametrize(
    "encoded",
    [
        _b64(b"[" * 100_000),  # the unauthenticated RecursionError
        _b64(b"[" * 3000),
        _b64(b'{"a": {"b": "c"}}'),
        _b64(b'{"a": 1}'),
        _b64(b'["a"]'),
        _b64(b"not json"),
        "@@@@",
    ],
)
def test_forged_settings_in_a_token_are_an_invalid_session(encoded: str) -> None:
    with pytest.raises(SessionInvalid):
        settings_in_token(f"tok.{encoded}")


def test_settings_round_trip_and_are_bounded() -> None:
    values = {"subdomain": "acme"}
    assert settings_in_token(f"tok.{encode_settings(values)}") == values
    assert settings_in_token("tok") is None
    with pytest.raises(InvalidInput, match="too long"):
        encode_settings({f"s{i}": "x" * 200 for i in range(20)})


def test_non_finite_numbers_are_refused() -> None:
    with pytest.raises(InvalidInput, match="out of range"):
        _finite("1e400")
    assert _finite("1.5") == 1.5


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"t": "\ud800"}},
        {"data": {"\udfff": 1}},
        {"data": ["ok", "\x00"]},
        {"data": {"k\x00": 1}},
        json.loads("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)),
    ],
)
def test_bodies_that_cannot_be_stored_or_sent_are_refused(body: object) -> None:
    with pytest.raises(InvalidInput):
        _check_strings_and_depth(body)


def test_ordinary_bodies_pass() -> None:
    _check_strings_and_depth(
        {"data": {"title": "Ünïcode ✓ 😀", "n": [1, 2.5, None, True]}, "nested": [[[]]]}
    )
    deep = json.loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    _check_strings_and_depth(deep)
