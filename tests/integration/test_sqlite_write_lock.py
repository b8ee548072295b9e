"""Several processes writing one SQLite file: the hot writers queue on one lock
(``broker.store.db.write_lock``), and their group commits make one chain."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from broker.flows.audit import verify_log
from broker.runtime import build_runtime
from broker.store.audit_writer import AuditWriter, Event
from broker.store.db import create_db_engine, write_lock
from broker.store.models import AuditRow

_SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def rt(make_settings, tmp_path: Path):
    # SQLite whatever BROKER_TEST_DATABASE_URL says: the lock is SQLite's
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'shared.db'}")
    runtime = build_runtime(settings, builtins=[], plugins=[], upgrade=True)
    yield runtime
    runtime.close()


def _append_many(url: str, name: str, count: int) -> None:
    """In a child process: ``count`` events from 8 threads through a group writer."""
    engine = create_db_engine(url)
    writer = AuditWriter(engine, head_file=None)

    def one(n: int) -> None:
        event = Event(
            time=datetime.now(UTC),
            event="key.rotated",
            actor=f"{name}:{n}",
            fields={"details": {"n": n}},
        )
        writer.run(lambda conn: ([event], None))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(count)))
    engine.dispose()


def test_group_writers_in_two_processes_make_one_chain(rt) -> None:
    url = rt.settings.database_url
    procs = [_SPAWN.Process(target=_append_many, args=(url, name, 150)) for name in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]  # no "database is locked" in either
    with Session(rt.engine) as db:
        actors = db.exec(select(AuditRow.actor).order_by(AuditRow.seq)).all()
    expected = {f"{name}:{n}" for name in "ab" for n in range(150)}
    assert sorted(actors) == sorted(expected)
    assert verify_log(rt).ok  # one chain, tree and head agree: no fork between processes
    assert Path(f"{url.removeprefix('sqlite:///')}-writelock").exists()


def _hold_lock(url: str, held, release, marker: str) -> None:  # type: ignore[no-untyped-def]
    engine = create_db_engine(url)
    with write_lock(engine):
        held.set()
        release.wait(60)
        Path(marker).write_text("released")
    engine.dispose()


def test_the_lock_is_held_across_processes(rt, tmp_path: Path) -> None:
    """While another process holds the lock, this one waits for it: when it gets it,
    the other has already written that it let go."""
    url = rt.settings.database_url
    marker = tmp_path / "marker"
    held, release = _SPAWN.Event(), _SPAWN.Event()
    child = _SPAWN.Process(target=_hold_lock, args=(url, held, release, str(marker)))
    child.start()
    assert held.wait(60)
    seen: list[str] = []
    started = threading.Event()

    def take() -> None:
        started.set()
        with write_lock(rt.engine):
            seen.append(marker.read_text() if marker.exists() else "not yet")

    taker = threading.Thread(target=take)
    taker.start()
    assert started.wait(10)
    release.set()
    taker.join(60)
    child.join(60)
    assert seen == ["released"]
    assert child.exitcode == 0
