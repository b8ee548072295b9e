"""GET /v1/catalog and /v1/connectors: what data exists and who may receive it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response

from broker.core.connector import Connector
from broker.core.errors import NotFound
from broker.web.api.error_responses import errors
from broker.web.api.schemas_catalog import Catalog, ConnectorDetail, ConnectorPage
from broker.web.deps import AnyKey, RuntimeDep
from broker.web.etag import NOT_MODIFIED, json_with_etag

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/catalog", operation_id="getCatalog", response_model=Catalog, responses=NOT_MODIFIED)
def catalog(request: Request, rt: RuntimeDep, _key: AnyKey) -> Response:
    """The data categories, under their headings; with ``ETag`` (send it back as
    ``If-None-Match``: ``304`` while it is current)."""
    return json_with_etag(request, Catalog.model_validate(rt.catalog.to_dict()))


def _connector_detail(rt: Any, connector: Connector) -> dict[str, Any]:
    manifest = connector.manifest
    data = []
    for decl in manifest.data:
        category = rt.catalog.get(decl.category)
        data.append(
            {
                "category": decl.category,
                "title": category.title if category else decl.category,
                "heading": category.heading if category else None,
                "fields": list(category.fields) if category else [],
                "purpose": decl.purpose,
                "required": decl.required,
            }
        )
    return {
        "id": manifest.id,
        "name": manifest.name,
        "description": manifest.description,
        "logo_url": manifest.logo_url,
        "privacy_policy_url": manifest.privacy_policy_url,
        "terms_url": manifest.terms_url,
        "scopes": list(manifest.oauth.scopes),
        "revocable": manifest.oauth.revoke_url is not None,
        "data": data,
        "actions": [
            {"name": a.name, "method": a.method, "url": a.url, "description": a.description}
            for a in manifest.actions
        ],
        "settings": [s.model_dump(mode="json") for s in manifest.settings],
        "hosts": sorted({urlsplit(a.url).netloc for a in manifest.actions} | set(manifest.hosts)),
        "delivery": "python" if connector.has_deliver_hook else "manifest",
        "source": str(connector.source),
    }


@router.get(
    "/connectors",
    operation_id="listConnectors",
    response_model=ConnectorPage,
    responses=NOT_MODIFIED,
)
def connectors(request: Request, rt: RuntimeDep, _key: AnyKey) -> Response:
    """Every installed connector; with ``ETag``, as the catalog."""
    items = [_connector_detail(rt, c) for c in rt.registry.all()]
    return json_with_etag(request, ConnectorPage.model_validate({"connectors": items}))


@router.get(
    "/connectors/{connector_id}",
    operation_id="getConnector",
    response_model=ConnectorDetail,
    responses={**NOT_MODIFIED, **errors(NotFound)},
)
def connector(request: Request, connector_id: str, rt: RuntimeDep, _key: AnyKey) -> Response:
    detail = _connector_detail(rt, rt.registry.get(connector_id))
    return json_with_etag(request, ConnectorDetail.model_validate(detail))
