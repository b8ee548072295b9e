"""The one cookie policy of the broker's pages: every cookie it sets is ``HttpOnly``,
``SameSite=Lax``, scoped to a path, and ``Secure`` whenever the broker's public URL
(``BROKER_BASE_URL``) is https; it is cleared with the same attributes it was set with.
Session cookies (``/me``, ``/audit``), the console's sign-in CSRF token, the connect
page's CSRF token and the OAuth browser binding all go through here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.responses import Response

if TYPE_CHECKING:
    from broker.runtime import Runtime

__all__ = ["clear_cookie", "https", "set_cookie"]


def https(rt: Runtime) -> bool:
    """Cookies are ``Secure`` whenever the broker's public URL is https."""
    return rt.settings.resolved_base_url.startswith("https://")


def set_cookie(
    response: Response, rt: Runtime, name: str, value: str, *, path: str, max_age: float
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max(0, int(max_age)),
        path=path,
        httponly=True,
        secure=https(rt),
        samesite="lax",
    )


def clear_cookie(response: Response, rt: Runtime, name: str, *, path: str) -> None:
    response.delete_cookie(name, path=path, httponly=True, secure=https(rt), samesite="lax")
