"""The data catalog: the shipped default, field mapping, flatten, validation, replacement."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.catalog import (
    SENSITIVITIES,
    Catalog,
    Category,
    Heading,
    default_catalog,
    flatten,
    load_catalog,
)
from broker.core.errors import CatalogError

EXPECTED_HEADINGS = {
    "user.name": "account",
    "user.contact.email": "account",
    "user.contact.organization": "account",
    "user.contact.phone_number": "account",
    "user.payment": "account",
    "user.contact.address": "account",
    "user.content.work_items": "application",
    "user.content.work_logs": "application",
    "user.content.comments": "application",
    "user.content.audit_trails": "application",
    "user.device.ip_address": "usage",
    "user.device": "usage",
    "user.device.device_id": "usage",
    "user.location.imprecise": "usage",
    "user.location.precise": "usage",
    "user.device.cookie_id": "cookies",
}

HEADER = """\
version = "test-1"

[[headings]]
key = "account"
title = "Account"
description = "Account data."

[[headings]]
key = "application"
title = "Application"
description = "Application data."
"""


def category_toml(key: str, fields: list[str], **overrides: str) -> str:
    values = {
        "key": key,
        "title": f"Title of {key}",
        "description": f"About {key}.",
        "heading": "account",
        "sensitivity": "low",
        **overrides,
    }
    lines = ["[[categories]]"]
    lines += [f"{name} = {json.dumps(value)}" for name, value in values.items()]
    lines.append(f"fields = {json.dumps(fields)}")
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, *categories: str, header: str = HEADER) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(header + "\n" + "\n".join(categories), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.message == f"catalog {path} is invalid"
    assert caught.value.code == "catalog_invalid"
    return caught.value.details["problems"]


# -- the shipped default ---------------------------------------------------------------


def test_default_catalog_has_every_policy_category_under_its_heading() -> None:
    catalog = default_catalog()
    assert [h.key for h in catalog.headings] == ["account", "application", "usage", "cookies"]
    for key, heading in EXPECTED_HEADINGS.items():
        category = catalog.get(key)
        assert category is not None, key
        assert key in catalog
        assert category.heading == heading, key
    assert {c.key for c in catalog.categories} == set(EXPECTED_HEADINGS)


def test_default_categories_are_complete() -> None:
    for category in default_catalog().categories:
        assert category.title and category.description, category.key
        assert category.sensitivity in SENSITIVITIES, category.key
        assert category.fields, category.key
        assert isinstance(category.fields, tuple)


def test_default_catalog_is_cached_and_equals_a_fresh_load() -> None:
    assert default_catalog() is default_catalog()
    assert load_catalog() == default_catalog()
    assert load_catalog("") == default_catalog()


def test_keys_are_exact_without_hierarchical_coverage() -> None:
    catalog = default_catalog()
    assert "user.device" in catalog
    assert "user.device.ip_address" in catalog
    assert "user.content" not in catalog
    assert "user" not in catalog
    assert catalog.get("user.contact") is None
    assert 42 not in catalog
    assert catalog.category_for("request.user_agent") == "user.device"
    assert catalog.category_for("request.ip") == "user.device.ip_address"


# -- mapping paths to categories -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("author.name", "user.name"),
        ("work_item.assignee.name", "user.name"),
        ("comments.author.name", "user.name"),
        ("user.name", "user.name"),
        ("profile.full_name", "user.name"),
        ("author.email", "user.contact.email"),
        ("work_item.assignee.email", "user.contact.email"),
        ("author.company", "user.contact.organization"),
        ("author.company.name", "user.contact.organization"),
        ("author.phone", "user.contact.phone_number"),
        ("account.card_last4", "user.payment"),
        ("billing.plan", "user.payment"),
        ("billing.address", "user.payment"),
        ("billing.address.city", "user.payment"),
        ("billing.email", "user.contact.email"),
        ("author.address", "user.contact.address"),
        ("author.address.city", "user.contact.address"),
        ("work_item", "user.content.work_items"),
        ("work_item.id", "user.content.work_items"),
        ("work_item.title", "user.content.work_items"),
        ("work_item.due", "user.content.work_items"),
        ("work_item.labels", "user.content.work_items"),
        ("work_items.title", "user.content.work_items"),
        ("work_log.duration_minutes", "user.content.work_logs"),
        ("work_item.work_logs.note", "user.content.work_logs"),
        ("comment.body", "user.content.comments"),
        ("comments.body", "user.content.comments"),
        ("work_item.comments.body", "user.content.comments"),
        ("audit_trail.action", "user.content.audit_trails"),
        ("request.ip_address", "user.device.ip_address"),
        ("request.ip", "user.device.ip_address"),
        ("request.user_agent", "user.device"),
        ("request.device_id", "user.device.device_id"),
        ("request.location.city", "user.location.imprecise"),
        ("request.location.lat", "user.location.precise"),
        ("request.location.lng", "user.location.precise"),
        ("request.cookie_id", "user.device.cookie_id"),
        ("request.cookies.session", "user.device.cookie_id"),
    ],
)
def test_default_mapping(path: str, expected: str) -> None:
    assert default_catalog().category_for(path) == expected


@pytest.mark.parametrize(
    "path",
    ["", "unknown", "author.id", "work_itemz.title", "request.location", "request.device.x"],
)
def test_unknown_paths_have_no_category(path: str) -> None:
    assert default_catalog().category_for(path) is None


def test_sample_payload_maps_cleanly() -> None:
    payload = {
        "work_item": {
            "id": "W-1",
            "title": "Fix",
            "due": "2026-12-01",
            "assignee": {"name": "Ada", "email": "ada@example.com"},
        },
        "author": {"name": "Bob"},
    }
    catalog = default_catalog()
    mapped = {path: catalog.category_for(path) for path, _ in flatten(payload)}
    assert mapped == {
        "work_item.id": "user.content.work_items",
        "work_item.title": "user.content.work_items",
        "work_item.due": "user.content.work_items",
        "work_item.assignee.name": "user.name",
        "work_item.assignee.email": "user.contact.email",
        "author.name": "user.name",
    }


def test_precedence_literal_last_then_literal_count_then_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        category_toml("user.a", ["x.**", "*.y"]),
        category_toml("user.b", ["**.z", "x.y.**"]),
        category_toml("user.c", ["x.*", "**.y"]),
        category_toml("user.d", ["x.*.w", "q.**"]),
        category_toml("user.e", ["*.*.w", "**.q.r.**"]),
    )
    catalog = load_catalog(path)
    # a literal last segment beats a trailing wildcard, even with fewer literals
    assert catalog.category_for("x.y.z") == "user.b"  # **.z over x.y.** and x.**
    # both end in a wildcard: more literal segments wins
    assert catalog.category_for("x.y.v") == "user.b"  # x.y.** over x.**
    # both end literal with one literal segment: first in the file wins
    assert catalog.category_for("x.y") == "user.a"  # *.y (user.a) before **.y (user.c)
    # both end literal: more literals wins over file order
    assert catalog.category_for("x.k.w") == "user.d"  # x.*.w over *.*.w
    assert catalog.category_for("p.k.w") == "user.e"
    # both end in a wildcard with one literal: first in the file wins
    assert catalog.category_for("x.k") == "user.a"  # x.** (user.a) before x.* (user.c)
    # a later pattern with more literals wins among trailing wildcards
    assert catalog.category_for("q.r.s") == "user.e"  # **.q.r.** over q.**


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("a.*", ["a.b"], ["a", "a.b.c", "b.a"]),
        ("a.**", ["a", "a.b", "a.b.c"], ["b", "ab", "b.a"]),
        ("**.a", ["a", "x.a", "x.y.a"], ["a.x", "xa"]),
        ("a.**.b", ["a.b", "a.x.b", "a.x.y.b"], ["a.x", "b"]),
        ("a.*.b", ["a.x.b"], ["a.b", "a.x.y.b"]),
    ],
)
def test_wildcards(
    tmp_path: Path, pattern: str, matching: list[str], not_matching: list[str]
) -> None:
    catalog = load_catalog(write(tmp_path, category_toml("user.a", [pattern])))
    for path in matching:
        assert catalog.category_for(path) == "user.a", path
    for path in not_matching:
        assert catalog.category_for(path) is None, path


def test_a_literal_segment_is_not_a_regex(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, category_toml("user.a", ["a+b", "**.c$"])))
    assert catalog.category_for("a+b") == "user.a"
    assert catalog.category_for("aab") is None
    assert catalog.category_for("x.c$") == "user.a"
    assert catalog.category_for("x.c") is None


# -- flatten ---------------------------------------------------------------------------


def test_flatten_nested_dicts() -> None:
    assert flatten({"a": {"b": {"c": 1}, "d": "x"}, "e": None}) == [
        ("a.b.c", 1),
        ("a.d", "x"),
        ("e", None),
    ]


def test_flatten_lists_add_no_segment() -> None:
    assert flatten({"comments": [{"body": "x"}, {"body": "y"}]}) == [
        ("comments.body", "x"),
        ("comments.body", "y"),
    ]
    assert flatten({"tags": ["a", ["b", ("c",)]], "n": [1]}) == [
        ("tags", "a"),
        ("tags", "b"),
        ("tags", "c"),
        ("n", 1),
    ]


def test_flatten_empty_containers_are_leaves() -> None:
    assert flatten({}) == []
    assert flatten({"a": {}, "b": [], "c": [{}, []], "d": {"e": {}}}) == [
        ("a", {}),
        ("b", []),
        ("c", {}),
        ("c", []),
        ("d.e", {}),
    ]


@pytest.mark.parametrize("payload", [{"a.b": 1}, {"a": {"b.c": 1}}, {"a": [{"": 1}]}, {1: "x"}])
def test_flatten_refuses_ambiguous_keys(payload: dict) -> None:
    with pytest.raises(ValueError, match="invalid"):
        flatten(payload)


def test_flatten_refuses_a_non_mapping() -> None:
    with pytest.raises(TypeError):
        flatten([{"a": 1}])  # type: ignore[arg-type]


def test_flatten_handles_deep_nesting() -> None:
    payload: dict = {"leaf": 1}
    for _ in range(5000):
        payload = {"n": payload}
    [(path, value)] = flatten(payload)
    assert value == 1
    assert path.count(".") == 5000


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text("abc_", min_size=1, max_size=3), children, max_size=3)
    ),
    max_leaves=15,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text("abc_", min_size=1, max_size=3), json_values, max_size=4))
def test_flatten_leaves_are_scalars_or_empty_at_well_formed_paths(payload: dict) -> None:
    for path, value in flatten(payload):
        assert all(path.split("."))
        assert path.split(".")[0] in payload
        assert not isinstance(value, dict | list) or value in ({}, [])


# -- validation ------------------------------------------------------------------------


def test_unknown_heading(tmp_path: Path) -> None:
    path = write(tmp_path, category_toml("user.a", ["a"], heading="acount"))
    assert problems_of(path) == [
        "category 'user.a': heading 'acount' is not a declared heading "
        "(declared: account, application)"
    ]


def test_duplicate_category_key(tmp_path: Path) -> None:
    path = write(tmp_path, category_toml("user.a", ["a"]), category_toml("user.a", ["b"]))
    assert problems_of(path) == [
        "category 'user.a': duplicate category key (categories[0] and categories[1])"
    ]


def test_bad_sensitivity(tmp_path: Path) -> None:
    path = write(tmp_path, category_toml("user.a", ["a"], sensitivity="extreme"))
    assert problems_of(path) == [
        "category 'user.a': sensitivity 'extreme' must be one of low, medium, high"
    ]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("", "is empty"),
        ("a..b", "has an empty segment"),
        (".a", "has an empty segment"),
        ("a.", "has an empty segment"),
        ("**", "has no literal segment"),
        ("*.**", "has no literal segment"),
        ("a.**.**", "repeats '**' ('**.**' is the same as '**')"),
        (
            "a.b*",
            "has an invalid segment 'b*' ('*' and '**' must be whole segments; no whitespace)",
        ),
        (
            "a b",
            "has an invalid segment 'a b' ('*' and '**' must be whole segments; no whitespace)",
        ),
    ],
)
def test_invalid_pattern(tmp_path: Path, pattern: str, reason: str) -> None:
    path = write(tmp_path, category_toml("user.a", ["ok", pattern]))
    assert problems_of(path) == [f"category 'user.a': field pattern {pattern!r} {reason}"]


def test_empty_or_missing_fields(tmp_path: Path) -> None:
    path = write(tmp_path, category_toml("user.a", []))
    assert problems_of(path) == [
        "category 'user.a': fields must be a non-empty array of field path patterns"
    ]
    path.write_text(
        HEADER + '[[categories]]\nkey = "user.b"\ntitle = "B"\n'
        'heading = "account"\nsensitivity = "low"\nfields = ["a", 3]\n'
    )
    assert problems_of(path) == ["category 'user.b': fields[1] must be a string"]


def test_pattern_claimed_by_two_categories(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        category_toml("user.a", ["**.email"]),
        category_toml("user.b", ["**.email", "x"]),
    )
    assert problems_of(path) == [
        "category 'user.b': field pattern '**.email' is already claimed by category 'user.a'"
    ]


def test_pattern_listed_twice_in_one_category(tmp_path: Path) -> None:
    path = write(tmp_path, category_toml("user.a", ["x", "x"]))
    assert problems_of(path) == ["category 'user.a': field pattern 'x' is listed twice"]


def test_missing_title(tmp_path: Path) -> None:
    text = category_toml("user.a", ["a"]).replace('title = "Title of user.a"\n', "")
    assert problems_of(write(tmp_path, text)) == ["category 'user.a': title is missing"]
    blank = category_toml("user.a", ["a"], title="  ")
    assert problems_of(write(tmp_path, blank)) == [
        "category 'user.a': title must be a non-empty string"
    ]


def test_missing_or_malformed_key_and_unknown_table_keys(tmp_path: Path) -> None:
    no_key = category_toml("user.a", ["a"]).replace('key = "user.a"\n', "")
    bad_key = category_toml("User A", ["b"])
    typo = category_toml("user.c", ["c"]) + 'feilds = ["d"]\n'
    assert problems_of(write(tmp_path, no_key, bad_key, typo)) == [
        "categories[0]: key is missing",
        "category 'User A': key must be dotted lowercase segments (e.g. 'user.contact.email')",
        "category 'user.c': unknown key 'feilds'",
    ]


def test_document_level_problems(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        'extra = 1\n[[headings]]\nkey = "a"\ntitle = "A"\n'
        '[[headings]]\nkey = "a"\ntitle = "A again"\n'
    )
    assert problems_of(path) == [
        "unknown top-level key 'extra'",
        "version must be a non-empty string",
        "heading 'a': duplicate heading key",
        "categories must be a non-empty array of tables ([[categories]])",
    ]


def test_every_problem_is_collected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        category_toml("user.a", ["**.email"], heading="nope", sensitivity="huge"),
        category_toml("user.a", ["**.email", "a..b"]),
    )
    # the second '**.email' is not reported again: the duplicate key already is
    assert problems_of(path) == [
        "category 'user.a': heading 'nope' is not a declared heading "
        "(declared: account, application)",
        "category 'user.a': sensitivity 'huge' must be one of low, medium, high",
        "category 'user.a': duplicate category key (categories[0] and categories[1])",
        "category 'user.a': field pattern 'a..b' has an empty segment",
    ]


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('version = "1"\n[[categories]\n')
    with pytest.raises(
        CatalogError, match=re.escape(f"catalog {path} is not valid TOML")
    ) as caught:
        load_catalog(path)
    assert caught.value.details["problems"][0].startswith("TOML syntax error: ")


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(CatalogError, match=re.escape(f"catalog {missing} cannot be read")):
        load_catalog(missing)


# -- operator replacement and rendering ------------------------------------------------


def test_operator_replacement_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        category_toml("user.contact.email", ["**.mail"], sensitivity="high"),
        category_toml("user.content.tickets", ["ticket.**"], heading="application"),
    )
    for given_path in (path, str(path)):
        catalog = load_catalog(given_path)
        assert catalog.version == "test-1"
        assert [c.key for c in catalog.categories] == [
            "user.contact.email",
            "user.content.tickets",
        ]
        assert catalog.get("user.contact.email").sensitivity == "high"  # type: ignore[union-attr]
        assert catalog.category_for("author.mail") == "user.contact.email"
        assert catalog.category_for("author.email") is None
        assert catalog.category_for("ticket.title") == "user.content.tickets"
        assert "user.name" not in catalog


def test_by_heading_keeps_order_and_empty_headings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        category_toml("user.b", ["b"]),
        category_toml("user.a", ["a"]),
    )
    grouped = load_catalog(path).by_heading()
    assert [(h.key, [c.key for c in cs]) for h, cs in grouped] == [
        ("account", ["user.b", "user.a"]),
        ("application", []),
    ]
    default_grouped = default_catalog().by_heading()
    assert [h.key for h, _ in default_grouped] == ["account", "application", "usage", "cookies"]
    assert [c.key for c in dict((h.key, cs) for h, cs in default_grouped)["application"]] == [
        "user.content.work_items",
        "user.content.work_logs",
        "user.content.comments",
        "user.content.audit_trails",
    ]


def test_to_dict_shape() -> None:
    catalog = default_catalog()
    rendered = catalog.to_dict()
    assert json.loads(json.dumps(rendered)) == rendered
    assert set(rendered) == {"version", "headings"}
    assert rendered["version"] == catalog.version
    assert [h["key"] for h in rendered["headings"]] == [
        "account",
        "application",
        "usage",
        "cookies",
    ]
    for heading in rendered["headings"]:
        assert set(heading) == {"key", "title", "description", "categories"}
        for category in heading["categories"]:
            assert set(category) == {
                "key",
                "title",
                "description",
                "heading",
                "sensitivity",
                "fields",
            }
            assert category["heading"] == heading["key"]
            assert isinstance(category["fields"], list)
    email = next(
        c for h in rendered["headings"] for c in h["categories"] if c["key"] == "user.contact.email"
    )
    assert email == {
        "key": "user.contact.email",
        "title": "Email address",
        "description": "The email address of your account.",
        "heading": "account",
        "sensitivity": "medium",
        "fields": ["**.email", "**.email_address"],
    }


def test_catalog_can_be_built_directly() -> None:
    catalog = Catalog(
        version="v",
        headings=(Heading("account", "Account", ""),),
        categories=(Category("user.name", "Name", "", "account", "low", ("**.name",)),),
    )
    assert catalog.category_for("author.name") == "user.name"
    assert catalog == Catalog(catalog.version, catalog.headings, catalog.categories)
    assert "_lookup" not in repr(catalog)


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("user.contact.emial", "user.contact.email"),
        ("user.email", "user.contact.email"),  # the right leaf under the wrong parent
        ("user.content.workitems", "user.content.work_items"),
        ("user.shoe_size", None),  # nothing close: no guess
        ("user.nope", None),
    ],
)
def test_suggest_names_the_key_a_typo_meant(typed: str, meant: str | None) -> None:
    assert default_catalog().suggest(typed) == meant
