"""Connections and consent records, for the host backend (admin) and auditors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response

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
from broker.web.api.schemas import ConnectionPublic, ConsentPublic
from broker.web.deps import AdminKey, AuditorKey, RuntimeDep

router = APIRouter(prefix="/v1", tags=["connections"])


@router.get("/users/{user_id}/connections")
def user_connections(
    user_id: str, rt: RuntimeDep, _key: AuditorKey
) -> dict[str, list[ConnectionPublic]]:
    validate_user_id(user_id)
    items = [ConnectionPublic(**connection_dict(c, r)) for c, r in list_connections(rt, user_id)]
    return {"connections": items}


@router.get("/connections/{connection_id}", response_model=ConnectionPublic)
def connection(connection_id: str, rt: RuntimeDep, _key: AuditorKey) -> ConnectionPublic:
    return ConnectionPublic(**connection_dict(*get_connection(rt, connection_id)))


@router.get("/connections/{connection_id}/consents")
def consents(
    connection_id: str, rt: RuntimeDep, _key: AuditorKey
) -> dict[str, list[ConsentPublic]]:
    return {
        "consents": [ConsentPublic(**consent_dict(r)) for r in list_consents(rt, connection_id)]
    }


@router.delete("/connections/{connection_id}")
def revoke(connection_id: str, rt: RuntimeDep, key: AdminKey) -> dict[str, Any]:
    result = revoke_connection(rt, connection_id, actor=key.id)
    conn, consent = get_connection(rt, connection_id)
    return {
        "connection": ConnectionPublic(**connection_dict(conn, consent)),
        "provider_revocation": result["provider_revocation"],
        "already_revoked": result["already"],
    }


@router.post("/connections/{connection_id}/confirm", response_model=ConnectionPublic)
def confirm(connection_id: str, rt: RuntimeDep, key: AdminKey) -> ConnectionPublic:
    """Make a ``pending_confirmation`` connection (``confirm: true`` on its connect session)
    ``active``; ``409 conflict`` when it is not waiting (e.g. confirmed already) or its
    confirmation window has passed (it is then revoked)."""
    conn = confirm_connection(rt, connection_id, actor=key.id)
    return ConnectionPublic(**connection_dict(*get_connection(rt, conn.id)))


@router.get("/consents/{consent_id}/receipt", response_class=PlainTextResponse)
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
