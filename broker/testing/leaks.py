"""Random payloads shaped like an example, and the check that a connector sent
nothing it was not given.

:func:`payload_strategy` turns a realistic example payload into a hypothesis
strategy: the same shape, every leaf a fresh value of the same kind (dates stay
dates, emails stay emails, numbers stay numbers). Every string is unique to its
leaf (``v<index>x<random>``) so a value found in a request can be traced to the
one field it came from.

:func:`unexplained` looks at every *atom* of an outgoing request (each JSON key
and value, each form or query key and value, each path segment, each header
the connector set) and reports the ones it cannot explain. An atom is explained
when, after removing every granted value (and values the third party itself
returned, the connection's settings and the connector's declared derived values)
what is left are words of the connector's own code or manifest (its constants)
or pieces of a granted value (a truncated title, say). A value of a field the
user did not grant is never explained, wherever it appears.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx
from hypothesis import strategies as st

from broker.core.catalog import flatten

__all__ = [
    "Atom",
    "leaf_strings",
    "payload_strategy",
    "request_atoms",
    "traceable_values",
    "unexplained",
    "vocabulary",
    "words",
]

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T")
_WORD = re.compile(r"[^\W_]+")
_TRACEABLE = re.compile(r"^v\d+x")
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789äéßøñ漢字"
# Headers httpx or the broker's transport set; not the connector's to explain.
_TRANSPORT_HEADERS = frozenset(
    {"host", "content-length", "accept-encoding", "connection", "authorization", "user-agent"}
)
_STANDARD_CONTENT_TYPES = ("application/json", "application/x-www-form-urlencoded")


def words(text: str) -> list[str]:
    """Runs of letters and digits (an underscore separates words)."""
    return _WORD.findall(text)


def _leaf_strategy(value: Any, index: int) -> st.SearchStrategy[Any]:
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(min_value=1, max_value=2**31)
    if isinstance(value, float):
        return st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
    if value is None:
        return st.none()
    text = str(value)
    if _DATE.match(text):
        return st.dates(date(2000, 1, 1), date(2099, 12, 31)).map(date.isoformat)
    if _DATETIME.match(text):
        return st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(
            lambda d: d.replace(microsecond=0, tzinfo=UTC).isoformat().replace("+00:00", "Z")
        )
    token = st.text(alphabet=_ALPHABET, min_size=3, max_size=12).map(lambda t: f"v{index}x{t}")
    if "@" in text:
        return token.map(lambda t: f"{t}@example.com")
    return token


def payload_strategy(example: Mapping[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Payloads shaped like ``example`` with fresh, traceable leaf values."""
    counter = iter(range(1_000_000))

    def build(value: Any) -> st.SearchStrategy[Any]:
        if isinstance(value, Mapping):
            return st.fixed_dictionaries({k: build(v) for k, v in value.items()})
        if isinstance(value, list | tuple):
            return st.tuples(*(build(v) for v in value)).map(list)
        return _leaf_strategy(value, next(counter))

    return build(dict(example))


@dataclass(frozen=True)
class Atom:
    request: str  # "POST slack.com/api/chat.postMessage"
    where: str  # "body.blocks.text", "query.q", "header.x-github-api-version", "path"
    value: str


def _json_atoms(value: Any, where: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield f"{where}.{k}(key)", str(k)
            yield from _json_atoms(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _json_atoms(item, where)
    elif isinstance(value, bool) or value is None:
        return
    else:
        yield where, str(value)


def request_atoms(request: httpx.Request, *, default_headers: Mapping[str, str] = {}) -> list[Atom]:
    """Every value a request carries that the connector chose."""
    label = f"{request.method} {request.url.host}{request.url.path}"
    out: list[tuple[str, str]] = []
    for segment in request.url.path.split("/"):
        if segment:
            out.append(("path", unquote(segment)))
    for key, value in request.url.params.multi_items():
        out += [("query(key)", key), (f"query.{key}", value)]
    for key, value in request.headers.multi_items():
        name = key.lower()
        if name in _TRANSPORT_HEADERS or default_headers.get(name) == value:
            continue
        if name == "content-type" and value.split(";")[0].strip() in _STANDARD_CONTENT_TYPES:
            continue
        out += [("header(name)", name), (f"header.{name}", value)]
    body = request.content
    if body:
        ctype = request.headers.get("content-type", "")
        text = body.decode("utf-8", "replace")
        if "json" in ctype:
            try:
                out += list(_json_atoms(json.loads(text), "body"))
            except ValueError:
                out.append(("body", text))
        elif "x-www-form-urlencoded" in ctype:
            for key, value in parse_qsl(text, keep_blank_values=True):
                out += [("form(key)", key), (f"form.{key}", value)]
        else:
            out.append(("body", text))
    return [Atom(label, where, value) for where, value in out]


def vocabulary(paths: Iterable[Path], extra: Iterable[str] = ()) -> frozenset[str]:
    """The connector's constants: every word of its source files and manifest."""
    found: set[str] = set()
    for path in paths:
        found.update(w.lower() for w in words(path.read_text(encoding="utf-8")))
    for text in extra:
        found.update(w.lower() for w in words(text))
    return frozenset(found)


def leaf_strings(payload: Mapping[str, Any]) -> list[str]:
    """String forms of a payload's leaves and its keys."""
    out: list[str] = []
    for path, value in flatten(payload):
        out.extend(path.split("."))
        if value is not None and not isinstance(value, bool | dict | list):
            out.append(str(value))
    return out


def traceable_values(payload: Mapping[str, Any]) -> list[str]:
    """The generated, leaf-unique strings of a payload (see :func:`payload_strategy`)."""
    return [
        value
        for _path, value in flatten(payload)
        if isinstance(value, str) and _TRACEABLE.match(value)
    ]


def unexplained(
    atoms: Iterable[Atom],
    *,
    explained: Iterable[str],
    forbidden: Iterable[str],
    constants: frozenset[str],
) -> list[str]:
    """What a connector sent that it was not given; an empty list means nothing."""
    known = sorted({s for s in explained if s}, key=len, reverse=True)
    secret = [s for s in forbidden if len(s) >= 4]
    problems: list[str] = []
    for atom in atoms:
        leaked = [s for s in secret if s in atom.value]
        if leaked:
            problems.append(
                f"{atom.request} {atom.where}: {atom.value!r} carries {leaked[0]!r}, "
                "a value of a field the user did not grant"
            )
            continue
        rest = atom.value
        for value in known:
            rest = rest.replace(value, " ")
        # words of the atom that are constants as they stand ("unfurl_links" stays a
        # constant even if removing a granted "url" cut it into pieces)
        whole = [w for w in words(atom.value) if w.lower() in constants]
        stray = [
            w
            for w in words(rest)
            if w.lower() not in constants
            and not any(w in value for value in known)
            and not any(w in c for c in whole)
        ]
        if stray:
            problems.append(
                f"{atom.request} {atom.where}: {atom.value!r} has {stray!r}, which is neither "
                "in the granted payload nor a constant of the connector"
            )
    return problems
