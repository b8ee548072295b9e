"""Audit: verify the chain, query transfers, summarise per recipient, export transfers and log."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from sqlmodel import Session

from broker.core.csv_cells import csv_row, list_cell
from broker.core.errors import InvalidInput
from broker.core.kantara import ConsentFacts
from broker.core.statuses import TransferStatus
from broker.core.times import rfc3339
from broker.flows.filter_times import filter_time
from broker.flows.paging import page
from broker.flows.recorded import latest_terms
from broker.flows.report_meta import meta_comment_lines, report_meta
from broker.flows.summaries import recipient_figures
from broker.flows.verification import Progress, verify_log
from broker.runtime import Runtime
from broker.store.audit import iter_canonical
from broker.store.audit_scan import last_seq
from broker.store.events import legal_disclosures
from broker.store.transfers import (
    TransferConditions,
    count_matching,
    matching_query,
    page_keys,
    where_matching,
)
from broker.store.tree import checkpoints

__all__ = [
    "EXPORT_COLUMNS",
    "TransferFilter",
    "count_transfers",
    "export_checkpoints",
    "export_log",
    "export_transfers",
    "list_transfers",
    "recipients_report",
    "verify_log",
]

EXPORT_COLUMNS = (
    "id", "created_at", "completed_at", "status", "user_id", "connector", "connection_id",
    "action", "categories", "field_paths", "dropped", "purpose", "legal_basis", "consent_id",
    "payload_sha256", "payload_bytes", "destination", "response_status", "response_id",
    "reason", "attempts", "idempotency_key", "actor", "mode",
)  # fmt: skip


@dataclass(frozen=True)
class TransferFilter:
    user_id: str | None = None
    connector_id: str | None = None
    category: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in tuple(TransferStatus):
            raise InvalidInput(
                f"status must be one of {', '.join(TransferStatus)}", details={"field": "status"}
            )
        for name in ("since", "until"):
            object.__setattr__(self, name, filter_time(getattr(self, name), name))

    @classmethod
    def parse(
        cls,
        *,
        user: str | None = None,
        connector: str | None = None,
        category: str | None = None,
        status: str | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        naive_utc: bool = False,
    ) -> TransferFilter:
        """The filter as the API, the console's form and the CLI give it: empty values
        are no filter; times as :func:`~broker.flows.filter_times.filter_time` reads them."""
        return cls(
            user_id=user or None,
            connector_id=connector or None,
            category=category or None,
            status=status or None,
            since=filter_time(since, "since", naive_utc=naive_utc),
            until=filter_time(until, "until", naive_utc=naive_utc),
        )

    @property
    def conditions(self) -> TransferConditions:
        """The filter as :func:`broker.store.transfers.where_matching` takes it."""
        return {
            "user_id": self.user_id,
            "connector_id": self.connector_id,
            "status": self.status,
            "since": self.since,
            "until": self.until,
            "category": self.category,
        }

    def apply(self, stmt: Any) -> Any:
        """``stmt`` (a select from transfers) narrowed to the transfers this matches."""
        return where_matching(stmt, **self.conditions)

    @property
    def page_keys(self) -> tuple[Any, Any]:
        """The ``(created_at, id)`` columns a page of this filter is ordered by."""
        return page_keys(category=self.category)


def list_transfers(
    rt: Runtime, flt: TransferFilter, *, cursor: str | None = None, limit: int = 50
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; ``next_cursor`` is None on the last page."""
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500", details={"field": "limit"})
    stmt = matching_query(**flt.conditions)
    return page(rt.engine, stmt, cursor=cursor, limit=limit, keys=flt.page_keys)


def iter_transfers(rt: Runtime, flt: TransferFilter) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        page, cursor = list_transfers(rt, flt, cursor=cursor, limit=500)
        yield from page
        if cursor is None:
            return


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, list):  # one cell, "a; b" (broker.core.csv_cells)
        return list_cell(_item(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _item(value: Any) -> str:
    """A list item in a CSV cell: a dict (a dropped field, an attempt) as ``k=v k=v``."""
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items() if v is not None)
    return _cell(value)


def count_transfers(rt: Runtime, flt: TransferFilter) -> int:
    """How many transfers ``flt`` matches."""
    with Session(rt.engine) as session:
        return count_matching(session, **flt.conditions)


def export_transfers(
    rt: Runtime, flt: TransferFilter, fmt: str, *, progress: Progress | None = None
) -> Iterator[str]:
    """JSONL (one transfer per line) or CSV (``#`` lines saying when, by whom and from
    which log state, then a header), streamed; ``progress(done, total)`` every 500
    transfers and at the end."""
    if fmt not in ("jsonl", "csv"):
        raise InvalidInput("format must be jsonl or csv", details={"field": "format"})
    total = count_transfers(rt, flt) if progress else 0
    done = 0
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(EXPORT_COLUMNS)
        yield "".join(line + "\r\n" for line in meta_comment_lines(report_meta(rt)))
        yield buf.getvalue()
    for t in iter_transfers(rt, flt):
        if fmt == "csv":
            buf.seek(0)
            buf.truncate()
            writer.writerow(csv_row(_cell(t.get(c)) for c in EXPORT_COLUMNS))
            yield buf.getvalue()
        else:
            row = {c: t.get(c) for c in EXPORT_COLUMNS}
            yield json.dumps(row, default=_cell, sort_keys=True) + "\n"
        done += 1
        if progress and done % 500 == 0:
            progress(done, max(total, done))
    if progress:
        progress(done, max(total, done))


def recipients_report(rt: Runtime) -> list[dict[str, Any]]:
    """Per third party: what it received, how often, when. Categories and fields count
    delivered transfers and those whose outcome is unknown (a possible disclosure);
    ``transfers`` counts the delivered ones, the other statuses are counted apart."""
    with Session(rt.engine) as session:  # from the summary kept with each outcome
        totals, received, counts = recipient_figures(session.connection())
        # names and links as recorded, not as installed: each recipient's latest consent
        agreed = latest_terms(session, [*counts, *(t[0] for t in totals)])
    report = []
    seen = set()
    for connector_id, n, first, last in totals:
        seen.add(connector_id)
        cats, fields = received.get(connector_id, (set(), set()))
        report.append(_recipient(agreed, connector_id, n, first, last, cats, fields, counts))
    for connector_id in sorted(set(counts) - seen):
        cats, fields = received.get(connector_id, (set(), set()))  # outcome_unknown only
        report.append(_recipient(agreed, connector_id, 0, None, None, cats, fields, counts))
    return sorted(report, key=lambda r: r["connector"]) + _legal_recipients(rt)


def _legal_recipients(rt: Runtime) -> list[dict[str, Any]]:
    """Recipients of legal disclosures (no consent), flagged ``legal_disclosure``."""
    with Session(rt.engine) as session:
        rows = legal_disclosures(session)
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = str(row.details.get("recipient"))
        when = datetime.fromisoformat(row.time.replace("Z", "+00:00"))
        r = out.setdefault(name, {
            "connector_id": None, "connector": None, "name": name,
            "privacy_policy_url": None, "terms_url": None,
            "categories": [], "field_paths": [], "transfers": 0, "failed": 0, "blocked": 0,
            "first_at": when, "last_at": when, "legal_disclosure": True, "references": [],
        })  # fmt: skip
        r["categories"] = sorted(set(r["categories"]) | set(row.categories))
        r["field_paths"] = sorted(set(r["field_paths"]) | set(row.field_paths))
        r["references"].append(row.details.get("reference"))
        r["transfers"] += 1
        r["last_at"] = when
    return sorted(out.values(), key=lambda r: r["name"])


def export_log(rt: Runtime, out: BinaryIO, *, progress: Progress | None = None) -> int:
    """The log for ``verify-export``: per entry, in seq order, the line
    ``{"entry":<canonical content>,"hash":"…","prev_hash":"…"}`` (itself canonical JSON).
    Returns the number of entries written; ``progress(done, total)`` every 5,000."""
    total = last_seq(rt.engine) if progress else 0
    n = 0
    for content, hash_, prev in iter_canonical(rt.engine):
        out.write(
            b'{"entry":%s,"hash":"%s","prev_hash":"%s"}\n'
            % (content, hash_.encode(), prev.encode())
        )
        n += 1
        if progress and n % 5000 == 0:
            progress(n, max(total, n))
    if progress:
        progress(n, max(total, n))
    return n


def export_checkpoints(rt: Runtime, out: BinaryIO) -> int:
    """Every signed checkpoint, each note followed by a blank line; returns the count."""
    n, after = 0, 0
    while batch := checkpoints(rt.engine, after_id=after):
        for row in batch:
            out.write(row.note.encode() + b"\n")
            n += 1
        after = batch[-1].id or after
    return n


def _recipient(
    agreed: dict[str, ConsentFacts],
    connector_id: str,
    delivered: int,
    first: datetime | None,
    last: datetime | None,
    cats: set[str],
    fields: set[str],
    counts: dict[str, dict[str, int]],
) -> dict[str, Any]:
    terms = agreed.get(connector_id)  # its latest consent record
    return {
        "connector_id": connector_id,
        "connector": connector_id,  # its old name, kept for one release (docs/api.md)
        "name": terms.connector_name if terms else connector_id,
        "privacy_policy_url": terms.privacy_policy_url if terms else None,
        "terms_url": terms.terms_url if terms else None,
        "categories": sorted(cats),
        "field_paths": sorted(fields),
        "transfers": delivered,
        "failed": counts.get(connector_id, {}).get("failed", 0),
        "blocked": counts.get(connector_id, {}).get("blocked", 0),
        "first_at": first,
        "last_at": last,
        "legal_disclosure": False,  # every row has the one shape (the legal rows' below)
        "references": [],
    }
