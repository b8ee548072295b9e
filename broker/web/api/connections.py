"""Connections and consent records, for the host backend (admin) and auditors."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response

from broker.core.errors import Conflict, NotFound
from broker.flows.confirm import confirm_connection
from broker.flows.connect import validate_user_id
from broker.flows.connections import (
    connection_dict,
    consent_dict,
    get_connection,
    list_connections,
    list_consents,
)
from broker.flows.receipts import consent_receipt, consent_receipt_jws
from broker.flows.revoke import revoke_connection
from broker.web.api.error_responses import errors
from broker.web.api.paging import Cursor, Limit, page_after
from broker.web.api.schemas import (
    ConnectionPage,
    ConnectionPublic,
    ConsentPage,
    ConsentPublic,
    Revocation,
)
from broker.web.deps import AdminKey, AuditorKey, RuntimeDep

router = APIRouter(prefix="/v1", tags=["connections"])


@router.get(
    "/users/{user_id}/connections",
    operation_id="listUserConnections",
    response_model=ConnectionPage,
    responses=errors("invalid_input"),
)
def user_connections(
    user_id: str, rt: RuntimeDep, _key: AuditorKey, limit: Limit = 100, cursor: Cursor = None
) -> ConnectionPage:
    """The user's connections, newest first."""
    validate_user_id(user_id)
    rows = list_connections(rt, user_id)
    page, nxt = page_after(rows, [c.id for c, _ in rows], cursor, limit)
    items = [ConnectionPublic(**connection_dict(c, r)) for c, r in page]
    return ConnectionPage(connections=items, next_cursor=nxt)


@router.get(
    "/connections/{connection_id}",
    operation_id="getConnection",
    response_model=ConnectionPublic,
    responses=errors(NotFound),
)
def connection(connection_id: str, rt: RuntimeDep, _key: AuditorKey) -> ConnectionPublic:
    return ConnectionPublic(**connection_dict(*get_connection(rt, connection_id)))


@router.get(
    "/connections/{connection_id}/consents",
    operation_id="listConnectionConsents",
    response_model=ConsentPage,
    responses=errors(NotFound),
)
def consents(connection_id: str, rt: RuntimeDep, _key: AuditorKey) -> ConsentPage:
    return ConsentPage(
        consents=[ConsentPublic(**consent_dict(r)) for r in list_consents(rt, connection_id)]
    )


@router.delete(
    "/connections/{connection_id}",
    operation_id="revokeConnection",
    response_model=Revocation,
    responses=errors(NotFound),
)
def revoke(connection_id: str, rt: RuntimeDep, key: AdminKey) -> Revocation:
    result = revoke_connection(rt, connection_id, actor=key.id)
    conn, consent = get_connection(rt, connection_id)
    return Revocation(
        connection=ConnectionPublic(**connection_dict(conn, consent)),
        provider_revocation=result["provider_revocation"],
        already_revoked=result["already"],
    )


@router.post(
    "/connections/{connection_id}/confirm",
    operation_id="confirmConnection",
    response_model=ConnectionPublic,
    responses=errors(NotFound, Conflict),
)
def confirm(connection_id: str, rt: RuntimeDep, key: AdminKey) -> ConnectionPublic:
    """Make a ``pending_confirmation`` connection (``confirm: true`` on its connect session)
    ``active``; ``409 conflict`` when it is not waiting (e.g. confirmed already) or its
    confirmation window has passed (it is then revoked)."""
    conn = confirm_connection(rt, connection_id, actor=key.id)
    return ConnectionPublic(**connection_dict(*get_connection(rt, conn.id)))


_RECEIPT_ANSWER = {
    200: {
        "description": "a signed note (format=note), or a compact JWS (format=jws)",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/jose": {"schema": {"type": "string"}},
        },
    },
    **errors(NotFound),
}


@router.get(
    "/consents/{consent_id}/receipt",
    operation_id="getConsentReceipt",
    response_class=PlainTextResponse,
    responses=_RECEIPT_ANSWER,
)
def receipt(
    consent_id: str,
    rt: RuntimeDep,
    _key: AuditorKey,
    format: Annotated[str, Query(pattern="^(note|jws)$")] = "note",
) -> Response:
    """The consent record as a signed note (C2SP), verifiable with /v1/audit/public-key;
    ``format=jws``: a Kantara Consent Receipt v1.1 as a compact JWS (``application/jose``)."""
    if format == "jws":
        return Response(
            consent_receipt_jws(rt, consent_id),
            media_type="application/jose",
            headers={"Content-Disposition": f'attachment; filename="consent-{consent_id}.jws"'},
        )
    return PlainTextResponse(
        consent_receipt(rt, consent_id),
        headers={"Content-Disposition": f'attachment; filename="consent-{consent_id}.note"'},
    )
