"""broker.store.subjects.format_start: from which entry the log is in a format."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session

from broker.core.pseudonyms import LOG_FORMAT
from broker.store.subjects import LogFormat, format_start


def test_an_empty_log_starts_in_the_current_format_and_a_due_handover_has_no_seq(
    engine: Engine,
) -> None:
    with Session(engine) as session:
        assert format_start(session, version=LOG_FORMAT) == 1  # migration 0015, empty log
        assert format_start(session, version=LOG_FORMAT + 1) is None
        row = session.get(LogFormat, LOG_FORMAT)
        assert row is not None
        row.first_seq = None  # a log begun in format 1: the handover is still due
        session.add(row)
        session.commit()
        assert format_start(session, version=LOG_FORMAT) is None
