"""Single-use tickets (broker.store.tickets) on a real database: connect and user links
(``connect_sessions``) and OAuth attempts (``oauth_attempts``) are found by digest,
refused once expired or used, and consumed by exactly one of any number of claims."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from broker.core.errors import SessionInvalid
from broker.core.tickets import TicketRefusal, ticket_refusal
from broker.core.tokens import digest
from broker.flows.browser_sessions import create_user_session, redeem_user_session
from broker.runtime import Runtime, build_runtime
from broker.store.db import create_db_engine, session_scope, upgrade_schema
from broker.store.models import Connection, ConnectSession, OAuthAttempt
from broker.store.tickets import claim_ticket, find_ticket
from tests.integration.conftest import Browser, Stack, query

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TicketModel = type[ConnectSession] | type[OAuthAttempt]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


def _link(engine: Engine, token: str, *, kind: str = "connect", expires_at: datetime) -> str:
    row = ConnectSession(
        id="sess_" + digest(token)[:12],
        token_hash=digest(token),
        kind=kind,
        user_id="u1",
        created_at=NOW - timedelta(minutes=1),
        expires_at=expires_at,
    )
    with session_scope(engine) as session:
        session.add(row)
    return row.id


def _attempt(engine: Engine, state: str, *, expires_at: datetime) -> str:
    session_id = _link(engine, "cs_for_" + state, expires_at=expires_at)
    with session_scope(engine) as session:
        session.add(
            Connection(id="conn_" + state, user_id="u1", connector_id="x", status="pending")
        )
        session.flush()
        session.add(
            OAuthAttempt(
                id="att_" + state,
                state_hash=digest(state),
                connection_id="conn_" + state,
                session_id=session_id,
                code_verifier="sealed",
                redirect_uri="https://broker.example/oauth/callback",
                consent={"connector_name": "X"},
                created_at=NOW - timedelta(minutes=1),
                expires_at=expires_at,
            )
        )
    return "att_" + state


def _ticket(engine: Engine, model: TicketModel, secret: str, *, expires_at: datetime) -> str:
    if model is OAuthAttempt:
        return _attempt(engine, secret, expires_at=expires_at)
    return _link(engine, secret, expires_at=expires_at)


def _used_at(engine: Engine, model: TicketModel, row_id: str) -> datetime | None:
    with Session(engine) as session:
        row = session.get(model, row_id)
        assert row is not None
        return row.used_at


def _claim(engine: Engine, model: TicketModel, secret: str, now: datetime = NOW, **kw: object):
    with session_scope(engine) as session:
        return claim_ticket(session, model, digest=digest(secret), now=now, **kw)


MODELS = pytest.mark.parametrize("model", [ConnectSession, OAuthAttempt])


@MODELS
def test_a_ticket_is_claimed_once(engine: Engine, model: TicketModel) -> None:
    row_id = _ticket(engine, model, "s1", expires_at=NOW + timedelta(minutes=5))
    first = _claim(engine, model, "s1")
    assert isinstance(first, model)
    assert first.id == row_id
    assert first.used_at == NOW
    assert _claim(engine, model, "s1", NOW + timedelta(seconds=1)) is TicketRefusal.USED
    assert _used_at(engine, model, row_id) == NOW  # the refused claim changed nothing


@MODELS
@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=1), timedelta(days=3)])
def test_an_expired_ticket_is_refused_and_not_consumed(
    engine: Engine, model: TicketModel, late: timedelta
) -> None:
    """A ticket expires at ``expires_at`` itself."""
    row_id = _ticket(engine, model, "s1", expires_at=NOW - late)
    assert _claim(engine, model, "s1") is TicketRefusal.EXPIRED
    assert _used_at(engine, model, row_id) is None


@MODELS
def test_a_used_ticket_says_used_after_it_expired(engine: Engine, model: TicketModel) -> None:
    _ticket(engine, model, "s1", expires_at=NOW + timedelta(minutes=5))
    assert not isinstance(_claim(engine, model, "s1"), TicketRefusal)
    assert _claim(engine, model, "s1", NOW + timedelta(hours=1)) is TicketRefusal.USED


@MODELS
def test_an_unknown_digest_is_refused(engine: Engine, model: TicketModel) -> None:
    _ticket(engine, model, "s1", expires_at=NOW + timedelta(minutes=5))
    assert _claim(engine, model, "s2") is TicketRefusal.UNKNOWN


def test_a_ticket_of_another_kind_is_unknown_and_left_unused(engine: Engine) -> None:
    row_id = _link(engine, "cs_1", kind="user", expires_at=NOW + timedelta(minutes=5))
    refused = _claim(engine, ConnectSession, "cs_1", match={"kind": "connect"})
    assert refused is TicketRefusal.UNKNOWN
    assert _used_at(engine, ConnectSession, row_id) is None
    claimed = _claim(engine, ConnectSession, "cs_1", match={"kind": "user"})
    assert isinstance(claimed, ConnectSession)


def test_a_claim_rolled_back_leaves_the_ticket_unused(engine: Engine) -> None:
    """The claim is the caller's transaction: a refusal after it undoes it."""
    row_id = _link(engine, "cs_1", expires_at=NOW + timedelta(minutes=5))
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        claimed = claim_ticket(session, ConnectSession, digest=digest("cs_1"), now=NOW)
        assert isinstance(claimed, ConnectSession)
        raise RuntimeError("refused after the claim")
    assert _used_at(engine, ConnectSession, row_id) is None
    assert isinstance(_claim(engine, ConnectSession, "cs_1"), ConnectSession)


def test_find_ticket_reads_without_consuming(engine: Engine) -> None:
    row_id = _link(engine, "cs_1", expires_at=NOW + timedelta(minutes=5))
    with session_scope(engine) as session:
        found = find_ticket(session, ConnectSession, digest=digest("cs_1"), now=NOW)
        assert isinstance(found, ConnectSession)
        assert found.user_id == "u1"
        later = NOW + timedelta(minutes=5)
        expired = find_ticket(session, ConnectSession, digest=digest("cs_1"), now=later)
        assert expired is TicketRefusal.EXPIRED
    assert _used_at(engine, ConnectSession, row_id) is None


def test_only_ticket_tables_can_be_claimed(engine: Engine) -> None:
    with Session(engine) as session, pytest.raises(TypeError, match="not a ticket table"):
        claim_ticket(session, Connection, digest="0" * 64, now=NOW)  # type: ignore[type-var]


@MODELS
def test_of_eight_concurrent_claims_exactly_one_wins(engine: Engine, model: TicketModel) -> None:
    row_id = _ticket(engine, model, "s1", expires_at=NOW + timedelta(minutes=5))
    start = threading.Barrier(8)
    results: list[object] = []
    lock = threading.Lock()

    def claim() -> None:
        start.wait()
        try:
            outcome: object = _claim(engine, model, "s1")
        except Exception as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 8
    winners = [r for r in results if isinstance(r, model)]
    assert len(winners) == 1, results
    assert [r for r in results if r is not winners[0]] == [TicketRefusal.USED] * 7
    assert _used_at(engine, model, row_id) == NOW


@pytest.mark.parametrize(
    ("found", "used_at", "expires_at", "expected"),
    [
        (False, None, None, TicketRefusal.UNKNOWN),
        (True, None, NOW + timedelta(seconds=1), None),
        (True, None, NOW, TicketRefusal.EXPIRED),
        (True, NOW - timedelta(hours=1), NOW - timedelta(minutes=1), TicketRefusal.USED),
        (True, NOW - timedelta(hours=1), NOW + timedelta(hours=1), TicketRefusal.USED),
    ],
)
def test_ticket_refusal(
    found: bool,
    used_at: datetime | None,
    expires_at: datetime | None,
    expected: TicketRefusal | None,
) -> None:
    got = ticket_refusal(found=found, used_at=used_at, expires_at=expires_at, now=NOW)
    assert got is expected


@MODELS
def test_expiry_is_exact_to_the_microsecond(engine: Engine, model: TicketModel) -> None:
    tick = timedelta(microseconds=1)
    _ticket(engine, model, "s1", expires_at=NOW + tick)
    assert _claim(engine, model, "s1", NOW + tick) is TicketRefusal.EXPIRED
    assert isinstance(_claim(engine, model, "s1", NOW), model)


@pytest.fixture
def rt(make_settings) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(), plugins=[], upgrade=True)
    yield runtime
    runtime.close()


def test_a_user_link_opened_by_eight_browsers_at_once_signs_in_one(rt: Runtime) -> None:
    """The caller keeps its wording: the other seven are told the link was used."""
    issued = create_user_session(rt, user_id="user-1", created_by=None)
    start = threading.Barrier(8)
    results: list[object] = []
    lock = threading.Lock()

    def redeem() -> None:
        start.wait()
        try:
            outcome: object = redeem_user_session(rt, issued.token)
        except SessionInvalid as exc:
            outcome = exc.message
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results, key=str) == [
        *["this link has already been used; open the page again"] * 7,
        "user-1",
    ]


def test_keys_rotate_skips_an_attempt_whose_verifier_went_with_its_expiry(
    stack: Stack, browser: Browser
) -> None:
    """An OAuth attempt refused as expired loses its sealed verifier but stays unused:
    `broker keys rotate` re-seals the verifiers of unused attempts and must pass it by
    (it tried to re-seal None and the rotation failed)."""
    from sqlmodel import select

    from broker.flows.rotation import rotate_token_key

    session = stack.connect_session("user-x")
    to_provider = browser.approve(session["url"], [])
    assert to_provider.status_code == 303
    state = query(to_provider.headers["location"])["state"]
    start = stack.rt.clock()
    stack.rt.clock = lambda: start + timedelta(days=1)  # the attempt has expired
    late = browser.get(f"{stack.url}/oauth/callback/sandbox?code=x&state={state}")
    assert late.status_code in (200, 303, 400), late.text
    stack.rt.clock = lambda: start
    with Session(stack.rt.engine) as db:
        (attempt,) = db.exec(select(OAuthAttempt)).all()
    assert attempt.used_at is None and attempt.code_verifier is None
    result = rotate_token_key(stack.rt, actor="test")
    assert result["new_key_id"] not in result["previous_key_ids"]
