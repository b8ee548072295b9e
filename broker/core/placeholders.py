"""URL templates: ``{name}`` placeholders filled from a connection's settings.

A manifest URL may contain placeholders such as
``https://{subdomain}.zendesk.com/api/v2/tickets.json``. Each placeholder names
a setting the manifest declares (``[[settings]]``) or the built-in
``{client_id}`` (the OAuth client id, resolved from its ``env:`` reference).
Placeholders may stand in the path and query (the value is percent-encoded, so
it can never add a path segment, a query parameter or a fragment), and in the
host only as its *first* label, followed by the third party's own domain: at
least two fixed labels (``https://{subdomain}.zendesk.com``), or ``localhost``
for tests. The value of a host placeholder must be one DNS label of letters,
digits and hyphens that no URL parser reads as a number (``2852039166``,
``0x7f000001``), and not ``localhost``. Placeholders may not stand in the scheme,
the port or the user-info. So a value can never move a URL to another host than
one under the domain the manifest names, and never to an IP address; where that
name then resolves is checked at the socket (:mod:`broker.core.addresses`).

A value that cannot be filled in raises :class:`~broker.core.errors.MissingSetting`
(no value) or :class:`~broker.core.errors.InvalidSetting` (a value that cannot stand
where its placeholder is): their messages and details name the setting and the
problem, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

from broker.core.errors import InvalidSetting, MissingSetting

__all__ = [
    "BUILTIN_PLACEHOLDERS",
    "host_label_problem",
    "host_placeholders",
    "placeholder_problem",
    "placeholders",
    "render_url",
    "sample_url",
]

BUILTIN_PLACEHOLDERS = frozenset({"client_id"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)
_NUMBER = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
_SCHEME_END = "://"
# The fixed part after a host placeholder that needs no second label (RFC 6761).
_LOOPBACK_SUFFIX = "localhost"


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


def host_label_problem(value: object) -> str | None:
    """Why ``value`` cannot fill a host placeholder, or ``None``: it must be one DNS
    label (letters, digits, hyphens; no dot), not read as a number by URL parsers
    (all digits, ``0x…``), and not ``localhost``."""
    if not isinstance(value, str) or not value:
        return "a host name label cannot be empty"
    if not _DNS_LABEL.fullmatch(value):
        return "a host name label is 1-63 letters, digits or hyphens (no dots)"
    if _NUMBER.fullmatch(value):
        return "a host name label cannot be a number"
    if value.lower() == _LOOPBACK_SUFFIX:
        return "a host name label cannot be 'localhost'"
    return None


def _host_problem(template: str, match: re.Match[str], start: int, end: int) -> str | None:
    """Why the placeholder ``match`` (inside the authority ``start:end``) is not the
    first label of a host followed by the third party's own domain."""
    name = match.group(1)
    before = template[start : match.start()]
    after = template[match.end() : end]
    if "@" in before or ":" in before:
        return f"placeholder {{{name}}} may only stand in the host name"
    if before and not before.endswith("."):
        return (
            f"placeholder {{{name}}} in the host must be a whole label "
            "(e.g. 'https://{subdomain}.example.com')"
        )
    if after and not after.startswith((".", ":")):
        return (
            f"placeholder {{{name}}} in the host must be a whole label "
            "(e.g. 'https://{subdomain}.example.com')"
        )
    if before:
        return (
            f"placeholder {{{name}}} may only fill the first label of the host "
            "(e.g. 'https://{subdomain}.example.com')"
        )
    if name in BUILTIN_PLACEHOLDERS:
        return f"placeholder {{{name}}} may not stand in the host"
    fixed = after.split(":", 1)[0].removeprefix(".")
    if "{" in fixed:
        return "only the first label of the host may be a placeholder"
    labels = [label for label in fixed.split(".") if label]
    if not labels:
        return (
            f"placeholder {{{name}}} may not be the whole host; it may fill only the first "
            "label of a host the manifest names (e.g. 'https://{subdomain}.example.com')"
        )
    if len(labels) < 2 and fixed.lower() != _LOOPBACK_SUFFIX:
        return (
            f"placeholder {{{name}}} must be followed by the third party's own domain, "
            f"at least two fixed labels (e.g. 'https://{{{name}}}.example.com'), "
            f"not just {fixed!r}"
        )
    return None


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
        if match.start() < end and (problem := _host_problem(template, match, start, end)):
            return f"{template!r}: {problem}"
    return None


def host_placeholders(template: str) -> set[str]:
    """The names of the placeholders that stand in ``template``'s host."""
    start, end = _authority_span(template)
    return {m.group(1) for m in _PLACEHOLDER.finditer(template) if start <= m.start() < end}


def render_url(template: str, values: Mapping[str, str]) -> str:
    """Fill ``template``'s placeholders; :class:`MissingSetting` names a placeholder
    with no value and :class:`InvalidSetting` one whose value cannot stand where the
    placeholder is (the value itself is never in either)."""
    start, end = _authority_span(template)
    out: list[str] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        value = values.get(name)
        if value is None:
            raise MissingSetting.named(name)
        if start <= match.start() < end:
            if problem := host_label_problem(value):
                raise InvalidSetting.host_label(name, problem)
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
