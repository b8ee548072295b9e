"""The pages' Content-Security-Policy, built only from parsed, valid origins.

No script at all (the pages work without JavaScript, so ``script-src`` falls back
to ``'none'``), except our own ``/broker-connect.js`` on the connect flow's finished
page when ``BROKER_CONNECT_ORIGINS`` is set; our own stylesheet and images plus
connectors' logo origins; forms post to ourselves, and the consent form also to the
provider's authorize origin, because browsers apply ``form-action`` to the redirect
that follows the approval.

Every origin is rebuilt from a URL's parsed scheme, host and port
(:func:`broker.core.urls.origin`), and the manifest checked those hosts when it
loaded, so nothing of a raw URL (``;``, quotes, spaces) can reach the header.
The consent page's authorize origin is the *rendered* one of that session (a
Zendesk connect goes to ``https://acme.zendesk.com``, not to the template's
``https://{subdomain}.zendesk.com``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from broker.core.errors import InvalidSetting
from broker.core.manifest import Manifest
from broker.core.placeholders import render_url
from broker.core.urls import origin

__all__ = ["authorize_origin", "content_security_policy", "logo_origins"]

# Defence in depth: an origin that reaches the header is scheme://host[:port], nothing else.
_SOURCE = re.compile(r"^https?://(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$")


def _sources(origins: Iterable[str | None]) -> list[str]:
    return sorted({o for o in origins if o is not None and _SOURCE.fullmatch(o)})


def authorize_origin(manifest: Manifest, settings: Mapping[str, str] | None = None) -> str | None:
    """The origin of the manifest's authorize URL with ``settings`` filled in, or
    ``None`` when a setting it needs is missing or invalid."""
    values = {**(settings or {}), "client_id": "x"}  # {client_id} never stands in a host
    try:
        return origin(render_url(manifest.oauth.authorize_url, values))
    except InvalidSetting:
        return None


def logo_origins(manifests: Iterable[Manifest]) -> list[str]:
    return _sources(origin(m.logo_url) for m in manifests if m.logo_url)


def content_security_policy(
    *, images: Iterable[str] = (), form_action: Iterable[str | None] = (), scripts: bool = False
) -> str:
    """``scripts``: our own script files may run (``script-src 'self'``, never inline):
    only the connect flow's finished page, which posts its outcome to a popup's opener
    with ``/broker-connect.js`` (broker.web.connect_popup)."""
    img_src = " ".join(["'self'", *_sources(images)])
    forms = " ".join(["'self'", *_sources(form_action)])
    script = "script-src 'self'; " if scripts else ""
    return (
        f"default-src 'none'; {script}img-src {img_src}; style-src 'self'; "
        f"form-action {forms}; frame-ancestors 'none'; base-uri 'none'"
    )
