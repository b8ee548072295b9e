"""Disclosure reports per user (GDPR Art. 15(1)(c)) and legal disclosures."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, Response

from broker.flows.connect import validate_user_id
from broker.flows.disclosures import DisclosureRequest, record_disclosure
from broker.flows.reports import user_report, user_report_csv, user_report_html
from broker.web.deps import AdminKey, AuditorKey, RuntimeDep

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["disclosures"])


@router.get("/users/{user_id}/disclosures", response_model=None)
def user_disclosures(
    rt: RuntimeDep,
    _key: AuditorKey,
    user_id: str,
    format: Annotated[str, Query(pattern="^(json|csv|html)$")] = "json",
) -> dict[str, Any] | Response:
    """Every recipient of this user's data: integrations (delivered transfers) and legal
    disclosures (flagged), with categories, fields, purposes, uses, legal basis, when."""
    report = user_report(rt, validate_user_id(user_id))
    if format == "csv":
        return Response(
            user_report_csv(report),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="disclosures-{user_id}.csv"'},
        )
    if format == "html":
        # a standalone page with its own inline style (the CLI writes the same file)
        csp = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        return HTMLResponse(user_report_html(report), headers={"Content-Security-Policy": csp})
    return jsonable_encoder(report)


@router.post("/disclosures", status_code=201)
def create_disclosure(
    rt: RuntimeDep, key: AdminKey, body: Annotated[Any, Body()] = None
) -> dict[str, Any]:
    """Record a disclosure the law required (no consent): it appears, flagged, in every report."""
    return record_disclosure(rt, DisclosureRequest.parse(body), actor=key.id)
