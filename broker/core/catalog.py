"""The data catalog: the platform's data categories and the payload fields in each.

A catalog is a TOML file (the packaged default is ``broker/core/data/catalog.toml``;
operators replace it by pointing ``BROKER_CATALOG`` at their own file, which the
settings layer passes to :func:`load_catalog`)::

    version = "1"

    [[headings]]                  # the privacy policy's headings, in display order
    key = "account"
    title = "Account information"
    description = "..."

    [[categories]]                # in display order; the order also breaks ties below
    key = "user.contact.email"    # fideslang key, or an extension under a fideslang parent
    title = "Email address"
    description = "..."           # optional, defaults to ""
    heading = "account"
    sensitivity = "medium"        # low | medium | high
    fields = ["**.email"]         # field path patterns

Keys are exact: there is no hierarchical coverage. ``user.device`` (browser and device
type) is a category of its own and does not include ``user.device.ip_address``.

Field paths and patterns
------------------------
A payload is flattened (:func:`flatten`) into dotted paths of its leaves; list elements do
not add a segment, so ``{"comments": [{"body": "x"}]}`` gives ``comments.body``.
A pattern is dotted segments: a literal segment matches itself, ``*`` matches exactly one
segment and ``**`` matches zero or more segments (``work_item.**`` matches ``work_item``
and everything below it). A pattern needs at least one literal segment, ``*``/``**`` must
be whole segments and ``**.**`` is refused as redundant.

Precedence
----------
Every path maps to at most one category. When several patterns match, the winner is:

1. a pattern whose last segment is literal beats one ending in ``*`` or ``**``
   (``work_item.assignee.email`` -> ``**.email``, not ``work_item.**``);
2. then the pattern with more literal segments
   (``work_item.comments.body`` -> ``work_item.comments.**``, not ``work_item.**``);
3. then the pattern that comes first in the file (category order, then field order).

A path that no pattern matches has no category (:meth:`Catalog.category_for` returns
``None``); the transfer gateway treats it as outside every grant.

Validation
----------
:func:`load_catalog` collects every problem (unknown heading, duplicate key, bad
sensitivity, empty or invalid pattern, a pattern claimed by two categories, missing
title, unknown table keys, ...) and raises one :class:`~broker.core.errors.CatalogError`
with ``details["problems"]``, each message naming the category and the field.
"""

from __future__ import annotations

import difflib
import functools
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from broker.core.errors import CatalogError

__all__ = [
    "SENSITIVITIES",
    "Catalog",
    "Category",
    "Heading",
    "default_catalog",
    "flatten",
    "load_catalog",
]

SENSITIVITIES: tuple[str, ...] = ("low", "medium", "high")

_WILDCARDS = frozenset({"*", "**"})
_LITERAL_SEGMENT = re.compile(r"[^.*\s]+")
_CATEGORY_KEY = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_HEADING_KEY = re.compile(r"[a-z][a-z0-9_]*")
_TOP_KEYS = frozenset({"version", "headings", "categories"})
_HEADING_KEYS = frozenset({"key", "title", "description"})
_CATEGORY_KEYS = frozenset({"key", "title", "description", "heading", "sensitivity", "fields"})
_LOOKUP_CACHE_SIZE = 4096
_SUGGEST_CUTOFF = 0.8  # difflib ratio; at 0.6 "user.nope" would suggest "user.name"


@dataclass(frozen=True)
class Heading:
    """A heading of the platform's privacy policy that groups categories."""

    key: str
    title: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "description": self.description}


@dataclass(frozen=True)
class Category:
    """One data category: its key, where it sits in the policy and its field patterns."""

    key: str
    title: str
    description: str
    heading: str
    sensitivity: str
    fields: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "description": self.description,
            "heading": self.heading,
            "sensitivity": self.sensitivity,
            "fields": list(self.fields),
        }


@dataclass(frozen=True)
class _Rule:
    """One compiled field pattern; rules sort by ``order``, best first."""

    pattern: str
    category: str
    regex: re.Pattern[str]
    order: tuple[int, int, int]


@dataclass(frozen=True)
class Catalog:
    """A validated catalog. Build it with :func:`load_catalog`."""

    version: str
    headings: tuple[Heading, ...]
    categories: tuple[Category, ...]
    _index: dict[str, Category] = field(init=False, repr=False, compare=False)
    _lookup: Callable[[str], str | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rules = _rules(self.categories)
        lookup = functools.lru_cache(maxsize=_LOOKUP_CACHE_SIZE)(
            functools.partial(_first_match, rules)
        )
        object.__setattr__(self, "_index", {c.key: c for c in self.categories})
        object.__setattr__(self, "_lookup", lookup)

    def get(self, key: str) -> Category | None:
        return self._index.get(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._index

    def suggest(self, key: str) -> str | None:
        """The catalog key a mistyped ``key`` most likely meant (``user.contact.emial``,
        or ``user.email`` for ``user.contact.email``), or ``None``: a close match of the
        whole key, else the one key whose last segment closely matches ``key``'s."""
        keys = [c.key for c in self.categories]
        if close := difflib.get_close_matches(key, keys, n=1, cutoff=_SUGGEST_CUTOFF):
            return close[0]
        leaves: dict[str, list[str]] = {}
        for k in keys:
            leaves.setdefault(k.rsplit(".", 1)[-1], []).append(k)
        leaf = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(leaf, list(leaves), n=2, cutoff=_SUGGEST_CUTOFF)
        if len(close) == 1 and len(leaves[close[0]]) == 1:
            return leaves[close[0]][0]
        return None

    def category_for(self, path: str) -> str | None:
        """The key of the category a flattened payload path belongs to, or ``None``."""
        return self._lookup(path)

    def by_heading(self) -> list[tuple[Heading, list[Category]]]:
        """Every heading in order, each with its categories in catalog order."""
        return [
            (heading, [c for c in self.categories if c.heading == heading.key])
            for heading in self.headings
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, as served by ``GET /v1/catalog``."""
        return {
            "version": self.version,
            "headings": [
                {**heading.to_dict(), "categories": [c.to_dict() for c in categories]}
                for heading, categories in self.by_heading()
            ],
        }


def flatten(data: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A payload as ``(dotted path, leaf value)`` pairs, in document order.

    List (and tuple) elements take their parent's path; an empty mapping or empty list
    is a leaf at its own path; an empty top-level payload gives ``[]``. Raises
    ``TypeError`` if ``data`` is not a mapping and ``ValueError`` for a key that is not
    a non-empty string without ``"."`` (it would make paths ambiguous).
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"payload must be a mapping, not {type(data).__name__}")
    leaves: list[tuple[str, Any]] = []
    stack = list(reversed(_children(data, "")))
    while stack:
        path, value = stack.pop()
        if isinstance(value, Mapping) and value:
            stack.extend(reversed(_children(value, path)))
        elif isinstance(value, list | tuple) and value:
            stack.extend((path, item) for item in reversed(value))
        else:
            leaves.append((path, value))
    return leaves


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read and validate a catalog file; ``None`` (or ``""``) is the packaged default."""
    if path is None or path == "":
        resource = resources.files("broker.core") / "data" / "catalog.toml"
        label = str(resource)
        reader: Callable[[], str] = functools.partial(resource.read_text, encoding="utf-8")
    else:
        label = str(path)
        reader = functools.partial(Path(path).read_text, encoding="utf-8")
    try:
        document = tomllib.loads(reader())
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(
            f"catalog {label} is not valid TOML: {exc}",
            details={"problems": [f"TOML syntax error: {exc}"]},
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(
            f"catalog {label} cannot be read",
            details={"problems": [f"cannot read file: {exc}"]},
        ) from exc
    problems: list[str] = []
    catalog = _parse(document, problems)
    if problems or catalog is None:
        raise CatalogError(f"catalog {label} is invalid", details={"problems": problems})
    return catalog


@functools.cache
def default_catalog() -> Catalog:
    """The packaged default catalog, loaded once."""
    return load_catalog(None)


# -- patterns ---------------------------------------------------------------------------


def _compile(pattern: str) -> re.Pattern[str]:
    """A regex matching ``"." + path``; ``ValueError`` says why a pattern is invalid."""
    if not pattern:
        raise ValueError("is empty")
    segments = pattern.split(".")
    parts: list[str] = []
    previous = ""
    for segment in segments:
        if segment == "":
            raise ValueError("has an empty segment")
        if segment == "**":
            if previous == "**":
                raise ValueError("repeats '**' ('**.**' is the same as '**')")
            parts.append(r"(?:\.[^.]+)*")
        elif segment == "*":
            parts.append(r"\.[^.]+")
        elif _LITERAL_SEGMENT.fullmatch(segment):
            parts.append(r"\." + re.escape(segment))
        else:
            raise ValueError(
                f"has an invalid segment {segment!r} "
                "('*' and '**' must be whole segments; no whitespace)"
            )
        previous = segment
    if all(segment in _WILDCARDS for segment in segments):
        raise ValueError("has no literal segment")
    return re.compile("".join(parts))


def _rules(categories: tuple[Category, ...]) -> tuple[_Rule, ...]:
    rules: list[_Rule] = []
    for category in categories:
        for pattern in category.fields:
            segments = pattern.split(".")
            ends_literal = segments[-1] not in _WILDCARDS
            literals = sum(segment not in _WILDCARDS for segment in segments)
            order = (0 if ends_literal else 1, -literals, len(rules))
            rules.append(_Rule(pattern, category.key, _compile(pattern), order))
    return tuple(sorted(rules, key=lambda rule: rule.order))


def _first_match(rules: tuple[_Rule, ...], path: str) -> str | None:
    subject = "." + path
    for rule in rules:
        if rule.regex.fullmatch(subject):
            return rule.category
    return None


def _children(mapping: Mapping[Any, Any], prefix: str) -> list[tuple[str, Any]]:
    children: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if not isinstance(key, str) or not key or "." in key:
            where = f" under {prefix!r}" if prefix else ""
            raise ValueError(
                f"payload key {key!r}{where} is invalid: keys must be non-empty strings without '.'"
            )
        children.append((f"{prefix}.{key}" if prefix else key, value))
    return children


# -- validation -------------------------------------------------------------------------


def _parse(document: Mapping[str, Any], problems: list[str]) -> Catalog | None:
    for extra in sorted(set(document) - _TOP_KEYS):
        problems.append(f"unknown top-level key {extra!r}")
    version = document.get("version")
    if not isinstance(version, str) or not version.strip():
        problems.append("version must be a non-empty string")
    headings = _parse_headings(document.get("headings"), problems)
    categories = _parse_categories(document.get("categories"), {h.key for h in headings}, problems)
    if problems:
        return None
    return Catalog(version=str(version), headings=headings, categories=categories)


def _tables(value: Any, name: str, problems: list[str]) -> list[Any]:
    if not isinstance(value, list) or not value:
        problems.append(f"{name} must be a non-empty array of tables ([[{name}]])")
        return []
    return value


def _text(table: Mapping[str, Any], name: str, label: str, problems: list[str]) -> str:
    value = table.get(name)
    if value is None:
        problems.append(f"{label}: {name} is missing")
        return ""
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{label}: {name} must be a non-empty string")
        return ""
    return value


def _parse_headings(value: Any, problems: list[str]) -> tuple[Heading, ...]:
    headings: list[Heading] = []
    seen: set[str] = set()
    for index, table in enumerate(_tables(value, "headings", problems)):
        label = f"headings[{index}]"
        if not isinstance(table, dict):
            problems.append(f"{label}: must be a table")
            continue
        key = _text(table, "key", label, problems)
        if key:
            label = f"heading {key!r}"
            if not _HEADING_KEY.fullmatch(key):
                problems.append(f"{label}: key must be lowercase letters, digits and '_'")
            elif key in seen:
                problems.append(f"{label}: duplicate heading key")
            seen.add(key)
        for extra in sorted(set(table) - _HEADING_KEYS):
            problems.append(f"{label}: unknown key {extra!r}")
        title = _text(table, "title", label, problems)
        description = table.get("description", "")
        if not isinstance(description, str):
            problems.append(f"{label}: description must be a string")
            description = ""
        headings.append(Heading(key=key, title=title, description=description))
    return tuple(headings)


def _parse_categories(
    value: Any, heading_keys: set[str], problems: list[str]
) -> tuple[Category, ...]:
    categories: list[Category] = []
    first_index: dict[str, int] = {}
    claimed: dict[str, str] = {}
    for index, table in enumerate(_tables(value, "categories", problems)):
        label = f"categories[{index}]"
        if not isinstance(table, dict):
            problems.append(f"{label}: must be a table")
            continue
        key = _text(table, "key", label, problems)
        if key:
            label = f"category {key!r}"
            if not _CATEGORY_KEY.fullmatch(key):
                problems.append(
                    f"{label}: key must be dotted lowercase segments (e.g. 'user.contact.email')"
                )
            if key in first_index:
                problems.append(
                    f"{label}: duplicate category key "
                    f"(categories[{first_index[key]}] and categories[{index}])"
                )
            else:
                first_index[key] = index
        for extra in sorted(set(table) - _CATEGORY_KEYS):
            problems.append(f"{label}: unknown key {extra!r}")
        title = _text(table, "title", label, problems)
        description = table.get("description", "")
        if not isinstance(description, str):
            problems.append(f"{label}: description must be a string")
            description = ""
        heading = _text(table, "heading", label, problems)
        if heading and heading not in heading_keys:
            declared = ", ".join(sorted(heading_keys)) or "none"
            problems.append(
                f"{label}: heading {heading!r} is not a declared heading (declared: {declared})"
            )
        sensitivity = table.get("sensitivity")
        if sensitivity not in SENSITIVITIES:
            problems.append(
                f"{label}: sensitivity {sensitivity!r} must be one of {', '.join(SENSITIVITIES)}"
            )
        fields = _parse_fields(table.get("fields"), label, claimed, problems)
        categories.append(
            Category(
                key=key,
                title=title,
                description=description,
                heading=heading,
                sensitivity=str(sensitivity),
                fields=fields,
            )
        )
    return tuple(categories)


def _parse_fields(
    value: Any, label: str, claimed: dict[str, str], problems: list[str]
) -> tuple[str, ...]:
    """Check one category's patterns; ``claimed`` maps each pattern to its owner's label."""
    if not isinstance(value, list) or not value:
        problems.append(f"{label}: fields must be a non-empty array of field path patterns")
        return ()
    fields: list[str] = []
    for position, pattern in enumerate(value):
        if not isinstance(pattern, str):
            problems.append(f"{label}: fields[{position}] must be a string")
            continue
        try:
            _compile(pattern)
        except ValueError as exc:
            problems.append(f"{label}: field pattern {pattern!r} {exc}")
            continue
        if pattern in fields:
            problems.append(f"{label}: field pattern {pattern!r} is listed twice")
            continue
        owner = claimed.get(pattern)
        if owner is not None and owner != label:
            problems.append(f"{label}: field pattern {pattern!r} is already claimed by {owner}")
            continue
        claimed[pattern] = label
        fields.append(pattern)
    return tuple(fields)
