"""Absolute links in pages, built from ``BROKER_BASE_URL``, never from the request.

Starlette's template ``url_for`` builds absolute URLs from the request's ``Host``
header, which the client chooses: a forged ``Host: evil.example`` would put
``http://evil.example/…`` into the page's links and forms. The broker knows its
public URL (``settings.resolved_base_url``), so links are that plus the route's path.
"""

from __future__ import annotations

from typing import Any

from jinja2 import pass_context
from starlette.requests import Request

__all__ = ["public_url", "template_url_for"]


def public_url(request: Request, name: str, /, **path_params: Any) -> str:
    """``BROKER_BASE_URL`` + the path of route ``name``."""
    base: str = request.app.state.runtime.settings.resolved_base_url
    return base + str(request.app.url_path_for(name, **path_params))


@pass_context
def template_url_for(context: Any, name: str, /, **path_params: Any) -> str:
    """The templates' ``url_for``."""
    return public_url(context["request"], name, **path_params)
