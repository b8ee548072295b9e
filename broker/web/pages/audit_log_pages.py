"""The auditor console's views of the whole log: ``/audit/events`` (every audit
event, filtered and paged), ``/audit/transfers/{id}`` (one transfer: attempts,
consent and terms, its audit entries), ``/audit/proof/{seq}`` (an entry's inclusion
proof against the latest checkpoint, JSON), ``/audit/snapshots/{digest}`` (a policy
page's text as retrieved, by its SHA-256) and ``/audit/terms-changes`` (each
``policy.changed``, the connections it paused and when each re-consented)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from broker.core.errors import InvalidInput, NotFound
from broker.flows.events import EVENT_GROUPS, EventFilter, event_names, list_events
from broker.flows.filter_times import filter_time
from broker.flows.policy_snapshots import snapshot
from broker.flows.terms_report import terms_changes
from broker.flows.transfer_detail import transfer_detail
from broker.store.tree import inclusion_proof, latest_checkpoint
from broker.web.deps import SQL_INT_MAX, AuditorSession, RuntimeDep
from broker.web.pages.audit_console import (
    PAGE_SIZES,
    SearchForm,
    console_page,
    to_login,
)

__all__ = ["EventSearch", "router"]

router = APIRouter(tags=["pages"], include_in_schema=False)


@dataclass(frozen=True)
class EventSearch(SearchForm):
    """The Events view's filter form, as typed; ``query`` carries it into links."""

    event: str = ""
    user: str = ""
    connector: str = ""
    since: str = ""
    until: str = ""
    limit: int = 50

    def to_filter(self) -> EventFilter:
        return EventFilter(
            event=self.event or None,
            user_id=self.user or None,
            connector_id=self.connector or None,
            since=filter_time(self.since, "since", naive_utc=True),  # datetime-local
            until=filter_time(self.until, "until", naive_utc=True),
        )


@router.get("/audit/events")
def console_events(
    request: Request,
    rt: RuntimeDep,
    current: AuditorSession,
    event: Annotated[str | None, Query(max_length=40)] = None,
    user: Annotated[str | None, Query(max_length=200)] = None,
    connector: Annotated[str | None, Query(max_length=63)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: int = 50,
) -> Response:
    if current is None:
        return to_login(request)
    search = EventSearch(
        event=(event or "").strip(),
        user=(user or "").strip(),
        connector=(connector or "").strip(),
        since=(since or "").strip(),
        until=(until or "").strip(),
        limit=limit if limit in PAGE_SIZES else 50,
    )
    items: list[dict[str, Any]] = []
    next_cursor, error = None, None
    try:
        items, next_cursor = list_events(rt, search.to_filter(), cursor=cursor, limit=search.limit)
    except InvalidInput as exc:
        error = exc.message
    names = {c.id: c.manifest.name for c in rt.registry.all()}
    context = {
        "search": search,
        "query": search.query,
        "events": items,
        "next_cursor": next_cursor,
        "first_page": cursor is None,
        "error": error,
        "groups": EVENT_GROUPS,
        "event_names": event_names(rt),
        "page_sizes": PAGE_SIZES,
        "names": names,
    }
    return console_page(request, "audit_events.html", context, current)


@router.get("/audit/transfers/{transfer_id}")
def console_transfer(
    request: Request,
    rt: RuntimeDep,
    current: AuditorSession,
    transfer_id: Annotated[str, Path(max_length=40)],
) -> Response:
    if current is None:
        return to_login(request)
    detail = transfer_detail(rt, transfer_id)  # NotFound: the error page, 404
    names = {c.id: c.manifest.name for c in rt.registry.all()}
    return console_page(request, "audit_transfer.html", {**detail, "names": names}, current)


@router.get("/audit/proof/{seq}")
def console_proof(
    request: Request,
    rt: RuntimeDep,
    current: AuditorSession,
    seq: Annotated[int, Path(ge=1, le=SQL_INT_MAX)],
) -> Response:
    """Entry ``seq``'s RFC 9162 inclusion proof in the tree of the latest checkpoint
    (as ``GET /v1/audit/proof/inclusion`` gives it), with that checkpoint's note."""
    if current is None:
        return to_login(request)
    try:
        checkpoint = latest_checkpoint(rt.engine)
    except NotFound:
        raise NotFound(
            "no checkpoint yet: sign one (broker audit checkpoint) to prove entries"
        ) from None
    if seq > checkpoint.tree_size:
        raise InvalidInput(
            f"entry {seq} is after the latest checkpoint ({checkpoint.tree_size} entries); "
            "it is proved once the next checkpoint is signed",
            details={"field": "seq"},
        )
    proof = inclusion_proof(rt.engine, seq=seq, size=checkpoint.tree_size)
    return JSONResponse(
        {**proof, "checkpoint": checkpoint.note},
        headers={"Content-Disposition": f'inline; filename="proof-{seq}.json"'},
    )


@router.get("/audit/terms-changes")
def console_terms_changes(request: Request, rt: RuntimeDep, current: AuditorSession) -> Response:
    if current is None:
        return to_login(request)
    names = {c.id: c.manifest.name for c in rt.registry.all()}
    context = {"changes": terms_changes(rt), "names": names}
    return console_page(request, "audit_terms_changes.html", context, current)


@router.get("/audit/snapshots/{digest}")
def console_snapshot(
    request: Request,
    rt: RuntimeDep,
    current: AuditorSession,
    digest: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
) -> Response:
    """The normalised text of a policy or terms page the broker retrieved (the
    snapshot a consent record or a terms version names by digest)."""
    if current is None:
        return to_login(request)
    text = snapshot(rt, digest)
    if text is None:
        raise NotFound(f"no policy snapshot {digest}", details={"digest": digest})
    return PlainTextResponse(text)
