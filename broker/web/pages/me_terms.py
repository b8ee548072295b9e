"""``/me``: agreeing again after a change of terms, and the text diff of a policy page.

* ``GET /me/connections/{id}/reconsent``: the re-consent page (what changed, the full
  list of data, earlier optional choices ticked where nothing changed);
* ``POST`` the same: ``decision=approve`` records the new consent on the same
  connection (or, when the third party must be signed in to again, goes to the consent
  page of a connect session that re-authorises it); ``decision=decline`` disconnects;
* ``GET /me/changes/{change_id}/{page}``: what the privacy policy or terms said before
  and after the change, sentence by sentence, escaped (no script on any page).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from broker.core.errors import Conflict, SessionInvalid
from broker.flows.notices import policy_diff
from broker.flows.reconsent import agree_again, decline, reconsent_view
from broker.web.deps import RuntimeDep, UserSession, client_ip
from broker.web.pages.me import disconnected_redirect, page, signed_in
from broker.web.sessions import csrf_matches

__all__ = ["router"]

router = APIRouter(tags=["pages"], include_in_schema=False)

ConnectionId = Annotated[str, PathParam(max_length=64)]


@router.get("/me/connections/{connection_id}/reconsent")
def me_reconsent(
    connection_id: ConnectionId, request: Request, rt: RuntimeDep, current: UserSession
) -> Response:
    user = signed_in(current)
    try:
        view = reconsent_view(rt, user_id=user.subject, connection_id=connection_id)
    except Conflict:  # answered already (or never paused): the list says where it stands
        return RedirectResponse(request.url_for("my_integrations").path, status_code=303)
    return page(
        request, "reconsent.html", {"user_id": user.subject, "csrf": user.csrf, "view": view}
    )


@router.post("/me/connections/{connection_id}/reconsent")
def me_reconsent_submit(
    connection_id: ConnectionId,
    request: Request,
    rt: RuntimeDep,
    current: UserSession,
    csrf: Annotated[str, Form(max_length=200)],
    decision: Annotated[str, Form(max_length=20)],
    categories: Annotated[list[str] | None, Form(max_length=200)] = None,
) -> Response:
    user = signed_in(current)
    if not csrf_matches(user.csrf, csrf):
        raise SessionInvalid("the form was not sent from your integrations page; reload it")
    if decision == "decline":
        result = decline(rt, user_id=user.subject, connection_id=connection_id)
        return disconnected_redirect(request, connection_id, result)
    if decision != "approve":
        raise SessionInvalid("unknown decision")
    outcome = agree_again(
        rt,
        user_id=user.subject,
        connection_id=connection_id,
        optional_granted=categories or [],
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    if outcome.authorise_url is not None:  # the consent page, then the third party
        return RedirectResponse(outcome.authorise_url, status_code=303)
    path = request.url_for("my_integrations").path
    return RedirectResponse(f"{path}?agreed={connection_id}", status_code=303)


@router.get("/me/changes/{change_id}/{page_key}")
def me_policy_diff(
    request: Request,
    rt: RuntimeDep,
    current: UserSession,
    change_id: Annotated[str, PathParam(max_length=64)],
    page_key: Annotated[str, PathParam(pattern="^(privacy_policy|terms)$")],
) -> Response:
    user = signed_in(current)
    diff = policy_diff(rt, user_id=user.subject, change_id=change_id, page=page_key)
    return page(
        request, "policy_diff.html", {"user_id": user.subject, "csrf": user.csrf, "diff": diff}
    )
