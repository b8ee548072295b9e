"""Subject keys (pseudonyms of users in the audit log) and the log's format version.

``subject_keys`` holds one random key per user, created the first time an audit entry
names the user, with the pseudonym it gives (``broker.core.pseudonyms``); ``audit_formats``
records from which entry on the log is in which format (migration 0015). Erasing a user
deletes their row: their pseudonym then names nobody.

Both audit append paths (``append_event`` and the group writer) pseudonymise every entry
through a :class:`Subjects` of their transaction, the one place where clear user ids
become pseudonyms. Pseudonyms are cached per process and engine, so the hot path pays
nothing for a user already seen; keys read or created in a transaction enter the cache
only when it commits (a rolled-back key is never used again).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, MutableMapping
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Connection, Engine, LargeBinary, event, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, Session, SQLModel, col

from broker.core.errors import InvariantBroken
from broker.core.pseudonyms import USER_ACTOR, new_subject_key, pseudonym, pseudonymise
from broker.store.types import UTCDateTime, utcnow

__all__ = [
    "LogFormat",
    "SubjectKey",
    "Subjects",
    "destroy_key",
    "forget",
    "format_start",
    "lookup",
    "named_entry",
    "names_user",
    "resolve",
    "resolve_rows",
    "subject_terms",
    "subjects_of",
]


class SubjectKey(SQLModel, table=True):
    """A user's subject key and the pseudonym it gives; deleted on erasure."""

    __tablename__ = "subject_keys"

    user_id: str = Field(primary_key=True, max_length=200)
    subject_key: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    pseudonym: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)


class LogFormat(SQLModel, table=True):
    """From which entry (``first_seq``) the log is in format ``version``; None: its
    ``log.format`` handover entry is still to be written (the broker does so at start)."""

    __tablename__ = "audit_formats"

    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    first_seq: int | None = Field(default=None, sa_type=BigInteger)
    recorded_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)


def format_start(session: Session, *, version: int) -> int | None:
    """The seq from which the log is in format ``version`` (None: not recorded, or its
    handover entry is still due)."""
    query = select(col(LogFormat.first_seq)).where(col(LogFormat.version) == version)
    return session.execute(query).scalars().first()


_T = SubjectKey.__table__  # type: ignore[attr-defined]
_CACHE: weakref.WeakKeyDictionary[Engine, dict[str, str]] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()
_SESSION_KEY = "broker.subjects"


def _cache(engine: Engine) -> dict[str, str]:
    with _GUARD:
        return _CACHE.setdefault(engine, {})


def _insert(conn: Connection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(_T).on_conflict_do_nothing(index_elements=["user_id"])


def lookup(conn: Connection, user_id: str) -> str | None:
    """The user's pseudonym if they have a subject key (no cache, no key made)."""
    row = conn.execute(select(_T.c.pseudonym).where(_T.c.user_id == user_id)).first()
    return None if row is None else str(row[0])


class Subjects:
    """The pseudonyms of one transaction on ``conn``: cached ones, then read or created
    (a new random key on first use); :meth:`committed` caches what it found."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._cache = _cache(conn.engine)
        self._found: dict[str, str] = {}

    def name(self, user_id: str) -> str:
        found = self._cache.get(user_id) or self._found.get(user_id)
        if found is None:
            found = lookup(self.conn, user_id)
            if found is None:
                key = new_subject_key()
                self.conn.execute(
                    _insert(self.conn),
                    {"user_id": user_id, "subject_key": key,
                     "pseudonym": pseudonym(key, user_id), "created_at": utcnow()},
                )  # fmt: skip
                found = lookup(self.conn, user_id)  # ours, or a racing process's
                if found is None:
                    raise InvariantBroken("a pseudonym just inserted cannot be read back")
        self._found[user_id] = found
        return found

    def apply(self, content: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """Pseudonymise ``content`` (an entry being sealed) in place."""
        return pseudonymise(content, self.name)

    def names(self) -> dict[str, str]:
        """pseudonym -> user id of every user named in this transaction (the webhooks
        to the host say which user, in clear)."""
        return {p: u for u, p in self._found.items()}

    def mark(self) -> dict[str, str]:
        """What was found so far (before a savepoint)."""
        return dict(self._found)

    def rolled_back(self, mark: dict[str, str]) -> None:
        """Forget what was found since ``mark`` (its savepoint was rolled back)."""
        self._found = mark

    def committed(self) -> None:
        if self._found:
            with _GUARD:
                self._cache.update(self._found)


def subjects_of(session: Session) -> Subjects:
    """The :class:`Subjects` of ``session``'s transaction (cached at its commit)."""
    subjects = session.info.get(_SESSION_KEY)
    if subjects is None:
        subjects = session.info[_SESSION_KEY] = Subjects(session.connection())
    return subjects


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    subjects = session.info.pop(_SESSION_KEY, None)
    if subjects is not None:
        subjects.committed()


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_SESSION_KEY, None)


def forget(engine: Engine, user_id: str) -> None:
    """Drop the user's pseudonym from this process's cache (after their erasure)."""
    with _GUARD:
        cached = _CACHE.get(engine)
        if cached is not None:
            cached.pop(user_id, None)


def destroy_key(conn: Connection, user_id: str) -> str | None:
    """Delete the user's subject key in ``conn``'s transaction; returns the pseudonym
    it gave (None: the user had none)."""
    found = lookup(conn, user_id)
    if found is not None:
        conn.execute(_T.delete().where(_T.c.user_id == user_id))
    return found


def subject_terms(conn: Connection, user_id: str) -> list[str]:
    """What ``user_id`` is called in the log: the clear id (format-1 entries) and, while
    their key exists, their pseudonym (format 2)."""
    found = lookup(conn, user_id)
    return [user_id] if found is None else [user_id, found]


def names_user(column: Any, user_id: str) -> Any:
    """SQL condition: ``column`` (an audit entry's ``user_id``) names ``user_id``, in clear
    (format 1) or by their pseudonym while their key exists (format 2)."""
    mine = select(_T.c.pseudonym).where(_T.c.user_id == user_id).scalar_subquery()
    return or_(column == user_id, column == mine)


def resolve(conn: Connection, values: Iterable[str | None]) -> dict[str, str]:
    """pseudonym -> user id for those of ``values`` whose key still exists."""
    wanted = sorted({v for v in values if v})
    if not wanted:
        return {}
    out: dict[str, str] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = conn.execute(select(_T.c.pseudonym, _T.c.user_id).where(_T.c.pseudonym.in_(chunk)))
        out.update({str(p): str(u) for p, u in rows})
    return out


def resolve_rows(conn: Connection, rows: Iterable[Any]) -> dict[str, str]:
    """pseudonym -> user id for the users and ``user:`` actors named by audit ``rows``."""
    values: set[str] = set()
    for row in rows:
        if row.user_id:
            values.add(row.user_id)
        if row.actor and row.actor.startswith(USER_ACTOR):
            values.add(row.actor[len(USER_ACTOR) :])
    return resolve(conn, values)


def named_entry(item: dict[str, Any], named: dict[str, str]) -> dict[str, Any]:
    """An entry as shown (``user_id``, ``actor``) with resolvable pseudonyms resolved."""
    user_id, actor = item.get("user_id"), item.get("actor")
    if user_id in named:
        item["user_id"] = named[user_id]
    if isinstance(actor, str) and actor.startswith(USER_ACTOR):
        item["actor"] = USER_ACTOR + named.get(actor[len(USER_ACTOR) :], actor[len(USER_ACTOR) :])
    return item
