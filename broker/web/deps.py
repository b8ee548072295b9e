"""FastAPI dependencies as ``Annotated`` aliases: the runtime and API-key roles."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from broker.core.errors import AuthenticationRequired
from broker.flows.keys import authenticate, require_role
from broker.runtime import Runtime
from broker.store.models import ApiKey

__all__ = ["AdminKey", "AnyKey", "AuditorKey", "RuntimeDep", "client_ip"]


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationRequired("the Authorization header must be 'Bearer <key>'")
    return value.strip()


def api_key(request: Request, rt: RuntimeDep) -> ApiKey:
    return authenticate(rt.engine, _bearer(request))


def admin_key(key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    return require_role(key, "admin")


def auditor_key(key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    return require_role(key, "admin", "auditor")


AnyKey = Annotated[ApiKey, Depends(api_key)]
AdminKey = Annotated[ApiKey, Depends(admin_key)]
AuditorKey = Annotated[ApiKey, Depends(auditor_key)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None
