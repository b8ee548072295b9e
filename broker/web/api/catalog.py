"""GET /v1/catalog and /v1/connectors: what data exists and who may receive it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter

from broker.core.connector import Connector
from broker.web.deps import AnyKey, RuntimeDep

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/catalog")
def catalog(rt: RuntimeDep, _key: AnyKey) -> dict[str, Any]:
    return rt.catalog.to_dict()


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


@router.get("/connectors")
def connectors(rt: RuntimeDep, _key: AnyKey) -> dict[str, Any]:
    return {"connectors": [_connector_detail(rt, c) for c in rt.registry.all()]}


@router.get("/connectors/{connector_id}")
def connector(connector_id: str, rt: RuntimeDep, _key: AnyKey) -> dict[str, Any]:
    return _connector_detail(rt, rt.registry.get(connector_id))
