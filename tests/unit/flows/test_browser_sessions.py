"""Server-side browser sessions: what they accept, what they refuse, and what ends them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from broker.core.tokens import digest
from broker.flows.browser_sessions import (
    end_browser_session,
    open_browser_session,
    read_browser_session,
)
from broker.flows.keys import create_api_key, revoke_api_key
from broker.runtime import Runtime, build_runtime
from broker.store.models import BrowserSessionRecord


@pytest.fixture
def rt(make_settings) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(), plugins=[], upgrade=True)
    yield runtime
    runtime.close()


def _rows(rt: Runtime) -> list[BrowserSessionRecord]:
    with Session(rt.engine) as session:
        return list(session.exec(select(BrowserSessionRecord)).all())


def test_round_trip_and_only_a_digest_is_stored(rt: Runtime) -> None:
    value, issued = open_browser_session(rt, "user", "user-1")
    read = read_browser_session(rt, value, kind="user")
    assert read == issued
    assert read.subject == "user-1" and read.csrf
    (row,) = _rows(rt)
    assert row.token_hash == digest(value)
    stored = " ".join(str(v) for v in row.model_dump().values())
    assert value not in stored and issued.csrf not in stored


def test_unknown_tampered_oversized_and_other_kind_are_refused(rt: Runtime) -> None:
    value, _ = open_browser_session(rt, "user", "user-1")
    assert read_browser_session(rt, None, kind="user") is None
    assert read_browser_session(rt, "", kind="user") is None
    assert (
        read_browser_session(rt, value[:-1] + ("A" if value[-1] != "A" else "B"), kind="user")
        is None
    )
    assert read_browser_session(rt, "x" * 10_000, kind="user") is None
    assert read_browser_session(rt, value, kind="auditor") is None


def test_sessions_expire_by_the_runtime_clock(rt: Runtime) -> None:
    value, issued = open_browser_session(rt, "user", "user-1")
    assert issued.expires_at - issued.issued_at == timedelta(seconds=rt.settings.user_session_ttl)
    real = rt.clock
    rt.clock = lambda: real() + timedelta(seconds=rt.settings.user_session_ttl + 1)
    try:
        assert read_browser_session(rt, value, kind="user") is None
        open_browser_session(rt, "user", "user-2")  # purges the expired row
    finally:
        rt.clock = real
    assert [r.subject for r in _rows(rt)] == ["user-2"]


def test_each_session_has_its_own_csrf_secret(rt: Runtime) -> None:
    _, a = open_browser_session(rt, "user", "user-1")
    _, b = open_browser_session(rt, "user", "user-1")
    assert a.csrf != b.csrf and a.id != b.id


def test_ending_a_session_ends_every_copy_of_its_cookie(rt: Runtime) -> None:
    value, _ = open_browser_session(rt, "user", "user-1")
    other, _ = open_browser_session(rt, "user", "user-1")
    assert end_browser_session(rt, value) is True
    assert read_browser_session(rt, value, kind="user") is None
    assert end_browser_session(rt, value) is False  # already ended
    assert read_browser_session(rt, other, kind="user") is not None  # only that one


def test_revoking_a_key_ends_the_console_sessions_it_opened(rt: Runtime) -> None:
    key, _ = create_api_key(rt.engine, role="auditor")
    keep, _ = create_api_key(rt.engine, role="auditor")
    value, _ = open_browser_session(rt, "auditor", key.id, api_key_id=key.id)
    kept, _ = open_browser_session(rt, "auditor", keep.id, api_key_id=keep.id)
    revoke_api_key(rt.engine, key.id)
    assert read_browser_session(rt, value, kind="auditor") is None
    assert read_browser_session(rt, kept, kind="auditor") is not None
    ended = {r.api_key_id: r.ended_at for r in _rows(rt)}
    assert ended[key.id] is not None and ended[keep.id] is None
