"""URL templates: ``{name}`` placeholders filled from a connection's settings.

A manifest URL may contain placeholders such as
``https://{subdomain}.zendesk.com/api/v2/tickets.json``. Each placeholder names
a setting the manifest declares (``[[settings]]``) or the built-in
``{client_id}`` (the OAuth client id, resolved from its ``env:`` reference).
Placeholders may stand in the host (a whole DNS label: the value must be one)
or in the path and query (the value is percent-encoded, so it can never add a
path segment, a query parameter or a fragment). They may not stand in the
scheme, the port or the user-info, so a value can never move a URL to another
host than the one the template names with that label filled in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

__all__ = [
    "BUILTIN_PLACEHOLDERS",
    "placeholder_problem",
    "placeholders",
    "render_url",
    "sample_url",
]

BUILTIN_PLACEHOLDERS = frozenset({"client_id"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)
_SCHEME_END = "://"


def placeholders(template: str) -> list[str]:
    """The placeholder names in ``template``, in order (repeats kept)."""
    return _PLACEHOLDER.findall(template)


def _authority_span(template: str) -> tuple[int, int]:
    """Where the authority (``host[:port]``) of ``template`` starts and ends."""
    start = template.find(_SCHEME_END)
    start = 0 if start < 0 else start + len(_SCHEME_END)
    end = len(template)
    for stop in "/?#":
        found = template.find(stop, start)
        if found >= 0:
            end = min(end, found)
    return start, end


def placeholder_problem(template: str, declared: set[str]) -> str | None:
    """Why ``template``'s placeholders are not acceptable, or ``None``."""
    if template.count("{") != template.count("}") or "{}" in template:
        return f"{template!r} has an unbalanced or empty placeholder"
    start, end = _authority_span(template)
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if not _NAME.fullmatch(name):
            return f"{template!r}: placeholder {{{name}}} is not a valid setting name"
        if name not in declared and name not in BUILTIN_PLACEHOLDERS:
            return f"{template!r}: placeholder {{{name}}} is not a declared setting"
        if match.start() < start:
            return f"{template!r}: placeholder {{{name}}} may not stand in the scheme"
        if match.start() < end:
            before = template[start : match.start()]
            after = template[match.end() : end]
            if "@" in before or ":" in before:
                return f"{template!r}: placeholder {{{name}}} may only stand in the host name"
            if not (before == "" or before.endswith(".")) or not (
                after == "" or after.startswith(".") or after.startswith(":")
            ):
                return (
                    f"{template!r}: placeholder {{{name}}} in the host must be a whole "
                    "label (e.g. 'https://{subdomain}.example.com')"
                )
    return None


def render_url(template: str, values: Mapping[str, str]) -> str:
    """Fill ``template``'s placeholders; ``KeyError`` names a missing value and
    ``ValueError`` a value that cannot stand where its placeholder is."""
    start, end = _authority_span(template)
    out: list[str] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        value = values[name]
        if start <= match.start() < end:
            if not _DNS_LABEL.fullmatch(value):
                raise ValueError(f"setting {name!r}: {value!r} is not a valid host name label")
            piece = value.lower()
        else:
            piece = quote(value, safe="")
        out.append(template[last : match.start()])
        out.append(piece)
        last = match.end()
    out.append(template[last:])
    return "".join(out)


def sample_url(template: str) -> str:
    """``template`` with every placeholder replaced by a harmless sample value,
    so the usual URL rules can check the rest of it."""
    return _PLACEHOLDER.sub("sample", template)
