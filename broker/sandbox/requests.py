"""Adapter from an incoming HTTP request to authlib's request objects.

authlib's server core is framework-free: a framework integration hands it an
``OAuth2Request`` (query and form parameters, headers) or a ``JsonRequest`` (headers, for
resource protection). :class:`IncomingRequest` is the framework-neutral snapshot the FastAPI
layer takes, with the body already read, so the authlib work can run in a worker thread.

Transport security: ``OAuth2Request.__init__`` refuses any URI that authlib does not
consider secure (``InsecureTransportError``, error ``insecure_transport``), decided by
``authlib.common.security.is_secure_transport`` on the request URI alone: https anywhere;
plain http only for ``localhost`` and loopback IP literals (RFC 8252 §7.3; loopback IPs
since authlib PR #788 in 2025, older releases accept only ``http://localhost:``); or
anything at all when the process-wide ``AUTHLIB_INSECURE_TRANSPORT`` variable is set.
The sandbox passes the real URL through and never sets that variable: on loopback it is
accepted as it stands, and on any other plain http host it is refused, just as the broker
refuses plain-http provider URLs off loopback.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import JsonPayload, JsonRequest, OAuth2Payload, OAuth2Request
from starlette.requests import Request

__all__ = [
    "IncomingRequest",
    "SandboxJsonRequest",
    "SandboxOAuth2Request",
    "read_incoming",
]


@dataclass(frozen=True)
class IncomingRequest:
    """What authlib needs from one HTTP request; ``headers`` is case-insensitive."""

    method: str
    url: str
    headers: Mapping[str, str]
    query: Sequence[tuple[str, str]] = ()
    form: Sequence[tuple[str, str]] = ()

    def form_value(self, name: str) -> str | None:
        return next((value for key, value in self.form if key == name), None)


async def read_incoming(request: Request) -> IncomingRequest:
    """FastAPI dependency: snapshot ``request``, reading a url-encoded or multipart form."""
    form: list[tuple[str, str]] = []
    if request.method == "POST":
        parsed = await request.form()
        form = [(key, value) for key, value in parsed.multi_items() if isinstance(value, str)]
    return IncomingRequest(
        method=request.method,
        url=str(request.url),
        headers=request.headers,
        query=list(request.query_params.multi_items()),
        form=form,
    )


def _first_values(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in items:
        values.setdefault(key, value)
    return values


class _Payload(OAuth2Payload):
    """Query parameters then form fields, like Flask's ``request.values``."""

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._data = _first_values(items)
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in items:
            self._datalist[key].append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class SandboxOAuth2Request(OAuth2Request):
    def __init__(self, incoming: IncomingRequest) -> None:
        # Raises InsecureTransportError for plain http off loopback (see module docstring).
        super().__init__(incoming.method, incoming.url, headers=incoming.headers)
        self._args = _first_values(incoming.query)
        self._form = _first_values(incoming.form)
        self.payload = _Payload([*incoming.query, *incoming.form])

    @property  # types-Authlib: dict[str, str | None]; the sandbox's values are never None
    def args(self) -> dict[str, str]:  # type: ignore[override]
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _JsonPayload(JsonPayload):
    def __init__(self, data: Any) -> None:
        self._data = data

    @property
    def data(self) -> Any:
        return self._data


class SandboxJsonRequest(JsonRequest):
    def __init__(self, incoming: IncomingRequest, data: Any = None) -> None:
        super().__init__(incoming.method, incoming.url, incoming.headers)
        self.payload = _JsonPayload(data)
