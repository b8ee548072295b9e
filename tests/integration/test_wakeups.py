"""Nudges between broker processes (broker.store.wakeups): a worker of another process
claims a transfer as soon as it is accepted, not at its next poll, and a request that
waits for a transfer another process runs answers as soon as its outcome is written.

Two runtimes on one database and one ``BROKER_HOME`` stand for two processes (the
API's, with no workers of its own, and a ``broker worker``'s, polling only once a
minute); on SQLite their nudges go through sockets, on PostgreSQL through NOTIFY."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from broker.core.catalog import default_catalog
from broker.demo import sandbox_connector
from broker.flows.submit import wait_for_outcome
from broker.flows.workers import DeliveryWorkers, start_workers
from broker.runtime import Runtime, build_runtime
from broker.store.wakeups import Wakeups, _messages
from tests.integration.conftest import Browser, Stack, connect

DATA = {"work_item": {"id": "W-1", "title": "Ship it"}}
POLL = 60.0  # the worker process's poll: no test here lasts that long


@pytest.fixture
def worker_process(stack: Stack) -> Iterator[tuple[Runtime, DeliveryWorkers]]:
    stack.rt.settings.workers = 0  # the API process delivers nothing itself
    settings = stack.rt.settings.model_copy(update={"workers": 2, "worker_poll": POLL})
    connector = sandbox_connector(default_catalog(), stack.sandbox.url)
    other = build_runtime(settings, builtins=[connector], plugins=[], upgrade=False)
    workers = start_workers(other, threads=2)  # as `broker worker` starts them
    try:
        yield other, workers
    finally:
        other.close()


def _post(stack: Stack, connection_id: str, headers: dict[str, str]) -> dict:
    with stack.api() as api:
        resp = api.post(
            f"/v1/connections/{connection_id}/transfers",
            json={"action": "post_message", "data": DATA},
            headers=headers,
        )
    assert resp.status_code in (201, 202), resp.text
    return resp.json()


def test_a_worker_elsewhere_claims_at_once_and_the_waiter_hears_the_outcome(
    stack: Stack, browser: Browser, worker_process: tuple[Runtime, DeliveryWorkers]
) -> None:
    other, workers = worker_process
    connection_id = connect(stack, browser, optional=[])
    started = time.monotonic()
    # Queued by the API process, which runs no workers: only a nudge brings the other
    # process's scheduler round before its minute-long poll.
    queued = _post(stack, connection_id, {"Prefer": "respond-async"})
    assert queued["status"] == "pending"
    done = wait_for_outcome(other, queued["id"], timeout=20)
    assert done.status == "delivered", done.reason
    # The synchronous default: the API process waits for a transfer the other process
    # runs, and answers 201 with the outcome (the nudge tells it the outcome is written).
    answered = _post(stack, connection_id, {})
    assert answered["status"] == "delivered"
    assert time.monotonic() - started < POLL / 2  # neither waited for a poll
    assert workers.counts["delivered"] == 2  # both ran in the other process
    keys = [r.headers.get("idempotency-key") for r in stack.provider.received]
    assert keys == [queued["id"], answered["id"]]  # each arrived once


def test_messages_are_coalesced_and_split_under_the_notify_limit() -> None:
    assert _messages(False, []) == []
    assert _messages(True, ["tr_1", "tr_2"]) == ["work", "done tr_1 tr_2"]
    ids = [f"tr_{i:030d}" for i in range(600)]
    parts = _messages(False, ids)
    assert len(parts) > 1 and all(len(p.encode()) <= 7005 for p in parts)
    assert [t for p in parts for t in p.split()[1:]] == ids


def test_a_gone_process_is_forgotten_by_the_next_sender(tmp_path) -> None:
    """SQLite's announcement files (whatever database the suite runs on): one whose
    socket no longer answers is removed."""
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'broker.db'}")
    heard: list[list[str]] = []
    a = Wakeups(engine, tmp_path, on_work=lambda: None, on_done=heard.append).start()
    b = Wakeups(engine, tmp_path, on_work=lambda: None, on_done=heard.append).start()
    try:
        (tmp_path / "wake" / "deadbeefdeadbeef").touch()  # a process that died
        b.done("tr_1")
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            b._kick.wait(0.01)  # until the listener thread heard it
        assert heard == [["tr_1"]]  # a heard b; b does not hear itself
        assert sorted(p.name for p in (tmp_path / "wake").iterdir()) == sorted([a._token, b._token])
    finally:
        a.stop()
        b.stop()
        engine.dispose()
