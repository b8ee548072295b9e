"""Disclosure reports per user (GDPR Art. 15(1)(c)) and legal disclosures."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, Response

from broker.flows.connect import validate_user_id
from broker.flows.disclosures import DisclosureRequest, record_disclosure
from broker.flows.user_report import user_report, user_report_csv
from broker.web.api.error_responses import errors
from broker.web.api.schemas_audit import DisclosureCreate, DisclosureReport, LogEntry
from broker.web.deps import AdminKey, AuditorKey, RuntimeDep
from broker.web.openapi import request_body
from broker.web.reports import user_report_html

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["disclosures"])


_REPORT_ANSWER = {
    200: {
        "description": "the report as JSON, CSV or a standalone HTML page",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "text/html": {"schema": {"type": "string"}},
        },
    },
    **errors("invalid_input"),
}


@router.get(
    "/users/{user_id}/disclosures",
    operation_id="getUserDisclosures",
    response_model=DisclosureReport,
    response_model_exclude_unset=True,
    responses=_REPORT_ANSWER,
)
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


@router.post(
    "/disclosures",
    status_code=201,
    operation_id="createDisclosure",
    response_model=LogEntry,
    responses=errors("invalid_input"),
    openapi_extra=request_body(DisclosureCreate, "the disclosure, as the law required it"),
)
def create_disclosure(
    rt: RuntimeDep,
    key: AdminKey,
    response: Response,
    body: Annotated[Any, Body(include_in_schema=False)] = None,
) -> dict[str, Any]:
    """Record a disclosure the law required (no consent): it appears, flagged, in every
    report; ``Location``: the user's report."""
    request = DisclosureRequest.parse(body)
    entry = record_disclosure(rt, request, actor=key.id)
    response.headers["Location"] = f"/v1/users/{quote(request.user_id, safe='')}/disclosures"
    return entry
