"""``/audit``: the auditor console. Sign in with an auditor (or admin) API key;
search and export transfers, see what each recipient received and when, and
check the log's integrity. Read-only, like an auditor key on the API."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from broker.core.errors import (
    BrokerError,
    Conflict,
    InvalidInput,
    NotFound,
    RateLimited,
    SessionInvalid,
)
from broker.core.statuses import TransferStatus
from broker.flows.activity import daily_transfers
from broker.flows.audit import (
    TransferFilter,
    export_transfers,
    list_transfers,
    recipients_report,
)
from broker.flows.browser_sessions import end_browser_session, sign_in_with_key
from broker.flows.checkpoints import checkpoint_dict
from broker.flows.integrity import integrity_status, start_full
from broker.flows.transfer_detail import outside_fields
from broker.store.audit import latest_head
from broker.store.tree import latest_checkpoint
from broker.web.cookies import clear_cookie, set_cookie
from broker.web.deps import AuditorSession, ConsoleSession, RuntimeDep, client_ip, issue_session
from broker.web.pages.chart import stacked_bars
from broker.web.sessions import AUDITOR_COOKIE, clear_session_cookie, csrf_matches

__all__ = [
    "PAGE_SIZES",
    "SearchForm",
    "TransferSearch",
    "console_page",
    "router",
    "to_login",
]

router = APIRouter(tags=["pages"], include_in_schema=False)

LOGIN_CSRF_COOKIE = "broker_login_csrf"
PAGE_SIZES = (25, 50, 100, 200)
CHART_DAYS = (7, 30, 90)
CHART_STATUSES = (TransferStatus.DELIVERED, TransferStatus.FAILED, TransferStatus.BLOCKED)


class SearchForm:
    """A console filter form's ``query``: its non-empty fields for links (``limit``
    only when not the default 50). Mixed into the forms' frozen dataclasses."""

    limit: int

    @property
    def query(self) -> dict[str, str]:
        values = {k: v for k, v in vars(self).items() if k != "limit" and v}
        if self.limit != 50:
            values["limit"] = str(self.limit)
        return values


@dataclass(frozen=True)
class TransferSearch(SearchForm):
    """The console's filter form, as typed; ``query`` carries it into links."""

    user: str = ""
    connector: str = ""
    category: str = ""
    status: str = ""
    since: str = ""
    until: str = ""
    limit: int = 50

    def to_filter(self) -> TransferFilter:
        return TransferFilter.parse(
            user=self.user,
            connector=self.connector,
            category=self.category,
            status=self.status,
            since=self.since,
            until=self.until,
            naive_utc=True,  # datetime-local fields
        )


def _search(
    user: str | None,
    connector: str | None,
    category: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    limit: int,
) -> TransferSearch:
    return TransferSearch(
        user=(user or "").strip(),
        connector=connector or "",
        category=category or "",
        status=status or "",
        since=(since or "").strip(),
        until=(until or "").strip(),
        limit=limit if limit in PAGE_SIZES else 50,
    )


def console_page(
    request: Request, name: str, context: dict[str, Any], console: ConsoleSession | None = None
) -> Response:
    if console is not None:
        context = {**context, "console": console, "csrf": console.session.csrf}
    return request.app.state.templates.TemplateResponse(request, name, context)


def to_login(request: Request) -> Response:
    return RedirectResponse(request.url_for("console_login").path, status_code=303)


@router.get("/audit/login")
def console_login(request: Request, current: AuditorSession) -> Response:
    if current is not None:
        return RedirectResponse(request.url_for("console_transfers").path, status_code=303)
    token = secrets.token_urlsafe(24)
    response = console_page(request, "audit_login.html", {"login_csrf": token, "error": None})
    set_cookie(
        response, request.app.state.runtime, LOGIN_CSRF_COOKIE, token, path="/audit", max_age=1800
    )
    return response


@router.post("/audit/login")
def console_sign_in(
    request: Request,
    rt: RuntimeDep,
    key: Annotated[str, Form(max_length=500)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE, ""), csrf):
        raise SessionInvalid(
            "the sign-in form has expired or was not sent from this site; reload it"
        )
    throttle = request.app.state.login_throttle
    try:
        api_key = sign_in_with_key(rt, key, throttle=throttle, client=client_ip(request))
    except RateLimited:
        raise  # 429 with Retry-After, in the error shape
    except BrokerError as exc:
        context = {"login_csrf": csrf, "error": exc.message}
        response = console_page(request, "audit_login.html", context)
        response.status_code = exc.status
        return response
    response = RedirectResponse(request.url_for("console_transfers").path, status_code=303)
    issue_session(request, response, rt, "auditor", api_key.id)
    clear_cookie(response, request.app.state.runtime, LOGIN_CSRF_COOKIE, path="/audit")
    return response


@router.post("/audit/logout")
def console_sign_out(
    request: Request,
    rt: RuntimeDep,
    current: AuditorSession,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    if current is not None and not csrf_matches(current.session.csrf, csrf):
        raise SessionInvalid("the sign-out form was not sent from the console; reload it")
    if current is not None:
        end_browser_session(rt, request.cookies.get(AUDITOR_COOKIE))
    response = RedirectResponse(
        request.url_for("console_login").path + "?signed_out=1", status_code=303
    )
    clear_session_cookie(request, response, AUDITOR_COOKIE)
    return response


@router.get("/audit")
def console_transfers(
    request: Request,
    rt: RuntimeDep,
    current: AuditorSession,
    user: Annotated[str | None, Query(max_length=200)] = None,
    connector: Annotated[str | None, Query(max_length=63)] = None,
    category: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: int = 50,
) -> Response:
    if current is None:
        return to_login(request)
    search = _search(user, connector, category, status, since, until, limit)
    items: list[dict[str, Any]] = []
    next_cursor, error = None, None
    try:
        items, next_cursor = list_transfers(
            rt, search.to_filter(), cursor=cursor, limit=search.limit
        )
    except InvalidInput as exc:
        error = exc.message
    known = {c.id: c.manifest.name for c in rt.registry.all()}
    if search.connector and search.connector not in known:
        known[search.connector] = search.connector
    return console_page(
        request,
        "audit_transfers.html",
        {
            "search": search,
            "query": search.query,
            "transfers": items,
            "outside": outside_fields(rt, items),
            "next_cursor": next_cursor,
            "first_page": cursor is None,
            "error": error,
            "connectors": sorted(known.items()),
            "headings": rt.catalog.by_heading(),
            "statuses": tuple(TransferStatus),
            "page_sizes": PAGE_SIZES,
            "head": latest_head(rt.engine),
            "names": known,
        },
        current,
    )


@router.get("/audit/export")
def console_export(
    request: Request,
    rt: RuntimeDep,
    current: AuditorSession,
    format: Annotated[str, Query(max_length=10)] = "csv",
    user: Annotated[str | None, Query(max_length=200)] = None,
    connector: Annotated[str | None, Query(max_length=63)] = None,
    category: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    if current is None:
        return to_login(request)
    flt = _search(user, connector, category, status, since, until, 50).to_filter()
    lines = export_transfers(rt, flt, format)
    first = next(lines, "")

    def stream() -> Iterator[str]:
        yield first
        yield from lines

    return StreamingResponse(
        stream(),
        media_type="text/csv" if format == "csv" else "application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="transfers.{format}"'},
    )


@router.get("/audit/recipients")
def console_recipients(
    request: Request, rt: RuntimeDep, current: AuditorSession, days: int = 30
) -> Response:
    if current is None:
        return to_login(request)
    days = days if days in CHART_DAYS else 30
    report = recipients_report(rt)
    names = {c.id: c.manifest.name for c in rt.registry.all()}
    names.update({r["connector"]: r["name"] for r in report if r["connector"]})
    order = sorted(names)  # one colour per recipient on every chart
    charts = []
    for status in CHART_STATUSES:
        series = daily_transfers(rt, days=days, status=status)
        chart = stacked_bars(series, names, order=order)
        label = status.capitalize()
        charts.append({"status": status, "label": label, "series": series, "chart": chart})
    return console_page(
        request,
        "audit_recipients.html",
        {
            "recipients": report,
            "charts": charts,
            "names": names,
            "days": days,
            "chart_days": CHART_DAYS,
        },
        current,
    )


@router.get("/audit/integrity")
def console_integrity(request: Request, rt: RuntimeDep, current: AuditorSession) -> Response:
    """The last completed verification, brought up to date incrementally (never a
    whole-log pass in the request); a full run in progress refreshes the page."""
    if current is None:
        return to_login(request)
    status = integrity_status(rt, actor=current.key.id)
    try:
        checkpoint: dict[str, Any] | None = checkpoint_dict(latest_checkpoint(rt.engine))
    except NotFound:
        checkpoint = None
    context = {
        "status": status,
        "result": status["last"],
        "running": status["running"],
        "head": latest_head(rt.engine),
        "checkpoint": checkpoint,
        "started": request.query_params.get("started") == "1",
    }
    return console_page(request, "audit_integrity.html", context, current)


@router.post("/audit/integrity/verify")
def console_verify_all(
    request: Request,
    rt: RuntimeDep,
    current: AuditorSession,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Start a full re-verification in the background; back to the page, which follows it."""
    if current is None:
        return to_login(request)
    if not csrf_matches(current.session.csrf, csrf):
        raise SessionInvalid("the verification form was not sent from the console; reload it")
    with contextlib.suppress(Conflict):  # one is running already: the page shows it
        start_full(rt, actor=current.key.id)
    path = request.url_for("console_integrity").path
    return RedirectResponse(path + "?started=1", status_code=303)
