"""``/me``: a user's own integrations, what each received, and disconnecting them.

The host creates a one-time link (``POST /v1/user-sessions``); opening it opens
a short-lived server-side session (its random id in a cookie for ``/me``) and
redirects to drop the token from the address bar. Every form carries the
session's CSRF secret; signing out ends the session on the server at once.

The page starts with a notice per integration whose terms changed since the user
agreed (:mod:`broker.flows.notices`); agreeing again, and the policy text diffs, are
in :mod:`broker.web.pages.me_terms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from broker.core import routes
from broker.core.errors import InvalidInput, NotFound, SessionInvalid
from broker.core.statuses import (
    LIVE_CONNECTION_STATUSES,
    ConnectionStatus,
    TokenRevocation,
    revocation_failed,
)
from broker.flows.activity import (
    ConnectionActivity,
    connection_activity,
    connection_history,
    owned_connection,
)
from broker.flows.browser_sessions import BrowserSession, end_browser_session, redeem_user_session
from broker.flows.connections import list_connections
from broker.flows.notices import PAGE_LABELS, paused_for_terms, pending_notices
from broker.flows.preferences import parse_preferences, read_preferences, set_objections
from broker.flows.receipts import consent_receipt, consent_receipt_jws
from broker.flows.revoke import revoke_connection
from broker.flows.user_report import user_report, user_report_csv
from broker.runtime import Runtime
from broker.store.models import Connection, ConsentRecord
from broker.web.api.schemas_audit import DisclosureReport
from broker.web.deps import RuntimeDep, UserSession, issue_session
from broker.web.sessions import USER_COOKIE, clear_session_cookie, csrf_matches

__all__ = ["ConnectionView", "disconnected_redirect", "page", "router", "signed_in"]

router = APIRouter(tags=["pages"], include_in_schema=False)

RECENT = 5
PAGE = 25
STATUS_LABELS: dict[str, str] = {  # by ConnectionStatus (a str)
    ConnectionStatus.ACTIVE: "Connected",
    ConnectionStatus.RECONSENT_REQUIRED: "Needs you to connect again",
    ConnectionStatus.ERROR: "Error",
    ConnectionStatus.REVOKED: "Disconnected",
    ConnectionStatus.REVOKING: "Disconnecting",
    ConnectionStatus.PENDING: "Not completed",
}


@dataclass(frozen=True)
class ConnectionView:
    """One connection as the user's page shows it."""

    conn: Connection
    consent: ConsentRecord | None
    name: str
    logo_url: str | None
    privacy_policy_url: str | None
    terms_url: str | None
    revocable: bool
    activity: ConnectionActivity

    @property
    def status_label(self) -> str:
        if paused_for_terms(self.conn):
            return "Paused: its terms changed"
        return STATUS_LABELS.get(self.conn.status, self.conn.status)

    @property
    def terms_paused(self) -> bool:
        return paused_for_terms(self.conn)

    @property
    def can_disconnect(self) -> bool:
        return self.conn.status in LIVE_CONNECTION_STATUSES


def _view(
    rt: Runtime, conn: Connection, consent: ConsentRecord | None, act: ConnectionActivity
) -> ConnectionView:
    connector = rt.registry.connectors.get(conn.connector_id)
    manifest = connector.manifest if connector else None
    name = conn.connector_id
    privacy_url = terms_url = None
    if manifest is not None:
        name, privacy_url, terms_url = (
            manifest.name,
            manifest.privacy_policy_url,
            manifest.terms_url,
        )
    if consent is not None:  # what the user was shown when agreeing
        privacy_url, terms_url = consent.privacy_policy_url, consent.terms_url
        name = manifest.name if manifest else consent.connector_name
    return ConnectionView(
        conn=conn,
        consent=consent,
        name=name,
        logo_url=manifest.logo_url if manifest else None,
        privacy_policy_url=privacy_url,
        terms_url=terms_url,
        revocable=bool(manifest and manifest.oauth.revoke_url),
        activity=act,
    )


def signed_in(session: BrowserSession | None) -> BrowserSession:
    """The signed-in user's session, or the error page asking them to open ``/me`` again."""
    if session is None:
        raise SessionInvalid(
            "your session has ended; open “My integrations” again from the platform"
        )
    return session


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status)


def _owned(rt: Runtime, user_id: str, connection_id: str) -> ConnectionView:
    conn, consent = owned_connection(rt, user_id=user_id, connection_id=connection_id)
    return _view(rt, conn, consent, connection_activity(rt, [conn.id])[conn.id])


@router.get(routes.ME)
def my_integrations(
    request: Request,
    rt: RuntimeDep,
    current: UserSession,
    session: Annotated[str | None, Query(max_length=500)] = None,
    disconnected: Annotated[str | None, Query(max_length=64)] = None,
    provider: Annotated[str | None, Query(max_length=20)] = None,
    preferences: Annotated[str | None, Query(max_length=20)] = None,
    agreed: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    if session is not None:
        user_id = redeem_user_session(rt, session)
        response = RedirectResponse(request.url_for("my_integrations").path, status_code=303)
        issue_session(request, response, rt, "user", user_id)
        return response
    user = signed_in(current)
    rows = list_connections(rt, user.subject)
    activity = connection_activity(rt, [c.id for c, _ in rows])
    views = [_view(rt, c, r, activity[c.id]) for c, r in rows]
    recent = {
        v.conn.id: connection_history(rt, v.conn.id, limit=RECENT)[0]
        for v in views
        if v.activity.total
    }
    flash = next((v for v in views if v.conn.id == disconnected), None)
    notices = pending_notices(rt, user.subject)
    return page(
        request,
        "me.html",
        {
            "user_id": user.subject,
            "csrf": user.csrf,
            "current": [v for v in views if v.conn.status in LIVE_CONNECTION_STATUSES],
            "past": [
                v
                for v in views
                if v.conn.status in (ConnectionStatus.REVOKED, ConnectionStatus.REVOKING)
            ],
            "unfinished": [v for v in views if v.conn.status == ConnectionStatus.PENDING],
            "recent": recent,
            "flash": flash,
            "provider_result": provider,
            "prefs": read_preferences(rt, user.subject),
            "prefs_saved": preferences == "saved",
            "notices": notices,
            "page_labels": PAGE_LABELS,
            "agreed": next((v for v in views if v.conn.id == agreed), None),
        },
    )


@router.get("/me/connections/{connection_id}")
def me_connection(
    connection_id: str,
    request: Request,
    rt: RuntimeDep,
    current: UserSession,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    user = signed_in(current)
    view = _owned(rt, user.subject, connection_id)
    transfers, next_cursor = connection_history(rt, connection_id, cursor=cursor, limit=PAGE)
    return page(
        request,
        "me_connection.html",
        {
            "user_id": user.subject,
            "csrf": user.csrf,
            "v": view,
            "transfers": transfers,
            "next_cursor": next_cursor,
            "first_page": cursor is None,
        },
    )


@router.get("/me/connections/{connection_id}/receipt")
def me_receipt(
    connection_id: str,
    rt: RuntimeDep,
    current: UserSession,
    format: Annotated[str, Query(pattern="^(note|jws)$")] = "note",
) -> Response:
    """The user's signed consent receipt for one of their connections (``format=jws``:
    the Kantara Consent Receipt as a JWS)."""
    user = signed_in(current)
    view = _owned(rt, user.subject, connection_id)
    if view.consent is None:
        raise NotFound("this connection has no consent record", details={})
    if format == "jws":
        return Response(
            consent_receipt_jws(rt, view.consent.id, user_id=user.subject),
            media_type="application/jose",
            headers={
                "Content-Disposition": f'attachment; filename="consent-{view.consent.id}.jws"'
            },
        )
    return PlainTextResponse(
        consent_receipt(rt, view.consent.id, user_id=user.subject),
        headers={"Content-Disposition": f'attachment; filename="consent-{view.consent.id}.note"'},
    )


@router.get("/me/connections/{connection_id}/disconnect")
def me_confirm_disconnect(
    connection_id: str, request: Request, rt: RuntimeDep, current: UserSession
) -> Response:
    user = signed_in(current)
    view = _owned(rt, user.subject, connection_id)
    if not view.can_disconnect:
        return RedirectResponse(request.url_for("my_integrations").path, status_code=303)
    return page(
        request, "me_disconnect.html", {"user_id": user.subject, "csrf": user.csrf, "v": view}
    )


@router.post("/me/connections/{connection_id}/disconnect")
def me_disconnect(
    connection_id: str,
    request: Request,
    rt: RuntimeDep,
    current: UserSession,
    csrf: Annotated[str, Form(max_length=200)],
) -> Response:
    user = signed_in(current)
    if not csrf_matches(user.csrf, csrf):
        raise SessionInvalid("the form was not sent from your integrations page; reload it")
    _owned(rt, user.subject, connection_id)  # only your own
    result = revoke_connection(rt, connection_id, actor=f"user:{user.subject}")
    return disconnected_redirect(request, connection_id, result)


def disconnected_redirect(request: Request, connection_id: str, result: dict[str, Any]) -> Response:
    """Back to ``/me``, saying what the revocation (``revoke_connection``'s result) did."""
    outcome = result["provider_revocation"]
    if result["already"]:
        provider = "already"
    elif revocation_failed(outcome):
        provider = "failed"
    elif TokenRevocation.REVOKED in outcome.values():
        provider = "revoked"
    else:
        provider = "local"
    query = urlencode({"disconnected": connection_id, "provider": provider})
    return RedirectResponse(f"{request.url_for('my_integrations').path}?{query}", status_code=303)


@router.post("/me/preferences")
def me_preferences(
    request: Request,
    rt: RuntimeDep,
    current: UserSession,
    csrf: Annotated[str, Form(max_length=200)],
    object_to: Annotated[list[str] | None, Form(max_length=200)] = None,
) -> Response:
    """Object to (ticked) or withdraw an objection to (unticked) a use of your data."""
    user = signed_in(current)
    if not csrf_matches(user.csrf, csrf):
        raise SessionInvalid("the form was not sent from your integrations page; reload it")
    uses = parse_preferences(rt, {"object_to": object_to or []})
    set_objections(rt, user.subject, uses, actor=f"user:{user.subject}")
    path = request.url_for("my_integrations").path
    return RedirectResponse(f"{path}?preferences=saved#preferences", status_code=303)


@router.get("/me/disclosures.{fmt}")
def me_disclosures(fmt: str, rt: RuntimeDep, current: UserSession) -> Response:
    """The user's disclosure report (``broker.flows.user_report``, as ``GET
    /v1/users/{id}/disclosures`` gives it to the host): every recipient of their data."""
    user = signed_in(current)
    if fmt not in ("csv", "json"):
        raise InvalidInput("the report comes as .csv or .json")
    report = user_report(rt, user.subject)
    headers = {"Content-Disposition": f'attachment; filename="my-disclosures.{fmt}"'}
    if fmt == "csv":
        return Response(user_report_csv(report), media_type="text/csv", headers=headers)
    # Through the API's own response model: the same document, times and all.
    body = DisclosureReport.model_validate(report).model_dump(mode="json", exclude_unset=True)
    return JSONResponse(body, headers=headers)


@router.post("/me/sign-out")
def me_sign_out(
    request: Request,
    rt: RuntimeDep,
    current: UserSession,
    csrf: Annotated[str, Form(max_length=200)],
) -> Response:
    user = signed_in(current)
    if not csrf_matches(user.csrf, csrf):
        raise SessionInvalid("the form was not sent from your integrations page; reload it")
    end_browser_session(rt, request.cookies.get(USER_COOKIE))
    response = page(
        request,
        "message.html",
        {
            "title": "Signed out",
            "message": "You left “My integrations”. Open it again from the platform.",
            "ok": True,
        },
    )
    clear_session_cookie(request, response, USER_COOKIE)
    return response
