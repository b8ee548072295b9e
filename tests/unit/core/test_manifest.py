"""Connector manifests: shape pass, meaning pass, precise problems, TOML files, secrets."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from broker.core.catalog import Catalog, default_catalog
from broker.core.errors import ConfigurationError, InvalidInput, ManifestError
from broker.core.manifest import Manifest, load_manifest_file, parse_manifest, resolve_secret

SOURCE = "connectors/example.toml"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return default_catalog()


def valid_raw() -> dict[str, Any]:
    """The shape of ``broker.demo.sandbox_manifest`` on https URLs."""
    return {
        "id": "example",
        "name": "Example Chat",
        "description": "A pretend work-chat service.",
        "privacy_policy_url": "https://example.com/privacy",
        "terms_url": "https://example.com/terms",
        "oauth": {
            "authorize_url": "https://example.com/oauth/authorize",
            "token_url": "https://example.com/oauth/token",
            "revoke_url": "https://example.com/oauth/revoke",
            "scopes": ["messages:write", "profile"],
            "client_id": "env:EXAMPLE_CLIENT_ID",
            "client_secret": "env:EXAMPLE_CLIENT_SECRET",
        },
        "data": [
            {
                "category": "user.content.work_items",
                "purpose": "Post work item updates to your team channel",
                "required": True,
            },
            {"category": "user.name", "purpose": "Show who made the change", "required": False},
            {
                "category": "user.contact.email",
                "purpose": "Mention the assignee so they are notified",
                "required": False,
            },
        ],
        "actions": [
            {
                "name": "post_message",
                "method": "POST",
                "url": "https://api.example.com/messages",
                "description": "Post a work item update to a channel",
            }
        ],
    }


VALID_TOML = """\
id = "example"
name = "Example Chat"
privacy_policy_url = "https://example.com/privacy"
terms_url = "https://example.com/terms"

[oauth]
authorize_url = "https://example.com/oauth/authorize"
token_url = "https://example.com/oauth/token"
revoke_url = "https://example.com/oauth/revoke"
scopes = ["messages:write"]
client_id = "env:EXAMPLE_CLIENT_ID"
client_secret = "env:EXAMPLE_CLIENT_SECRET"

[[data]]
category = "user.content.work_items"
purpose = "Post work item updates to a channel"
required = true

[[data]]
category = "user.name"
purpose = "Show who made the change"
required = false

[[actions]]
name = "post_message"
method = "POST"
url = "https://api.example.com/messages"
"""


def problems_of(raw: dict[str, Any], catalog: Catalog, source: str = SOURCE) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw, catalog, source=source)
    err = info.value
    assert source in str(err), "the message must name the source file"
    assert err.details["source"] == source
    assert err.code == "manifest_invalid"
    return err.details["problems"]


# --- the valid manifest -------------------------------------------------------------


def test_valid_manifest_parses_with_all_fields(catalog: Catalog) -> None:
    m = parse_manifest(valid_raw(), catalog, source=SOURCE)
    assert isinstance(m, Manifest)
    assert m.id == "example"
    assert m.oauth.scopes == ("messages:write", "profile")
    assert m.oauth.token_endpoint_auth_method == "client_secret_basic"
    assert m.required_categories == ("user.content.work_items",)
    assert m.optional_categories == ("user.name", "user.contact.email")
    decl = m.declaration("user.name")
    assert decl is not None
    assert decl.purpose == "Show who made the change"
    assert m.declaration("user.payment") is None
    action = m.action("post_message")
    assert action is not None
    assert action.url == "https://api.example.com/messages"
    assert m.action("nope") is None


def test_required_defaults_to_true_and_method_to_post(catalog: Catalog) -> None:
    raw = valid_raw()
    del raw["data"][1]["required"]
    del raw["actions"][0]["method"]
    m = parse_manifest(raw, catalog, source=SOURCE)
    assert "user.name" in m.required_categories
    assert m.actions[0].method == "POST"


def test_manifest_is_immutable(catalog: Catalog) -> None:
    m = parse_manifest(valid_raw(), catalog, source=SOURCE)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        m.id = "other"  # type: ignore[misc]


def test_digest_is_stable_and_changes_with_content(catalog: Catalog) -> None:
    a = parse_manifest(valid_raw(), catalog, source=SOURCE)
    b = parse_manifest(valid_raw(), catalog, source="elsewhere.toml")
    assert a.digest() == b.digest()
    assert len(a.digest()) == 64
    raw = valid_raw()
    raw["data"][0]["purpose"] = "Something else entirely"
    c = parse_manifest(raw, catalog, source=SOURCE)
    assert c.digest() != a.digest()


def test_public_dict_hides_client_credentials(catalog: Catalog) -> None:
    m = parse_manifest(valid_raw(), catalog, source=SOURCE)
    public = m.public_dict()
    assert "client_id" not in public["oauth"]
    assert "client_secret" not in public["oauth"]
    assert "EXAMPLE_CLIENT_SECRET" not in repr(public)
    assert public["oauth"]["token_url"] == "https://example.com/oauth/token"
    assert public["privacy_policy_url"] == "https://example.com/privacy"


def test_parse_does_not_mutate_input(catalog: Catalog) -> None:
    raw = valid_raw()
    before = copy.deepcopy(raw)
    parse_manifest(raw, catalog, source=SOURCE)
    assert raw == before


# --- meaning pass: the precise messages the issue asks for --------------------------


def test_unknown_category_is_named(catalog: Catalog) -> None:
    raw = valid_raw()
    raw["data"][1]["category"] = "user.shoe_size"
    assert problems_of(raw, catalog) == ["data[1].category: 'user.shoe_size' is not in the catalog"]


@pytest.mark.parametrize("field", ["privacy_policy_url", "terms_url"])
def test_missing_policy_link_is_named(catalog: Catalog, field: str) -> None:
    raw = valid_raw()
    del raw[field]
    assert problems_of(raw, catalog) == [f"{field}: is required"]


@pytest.mark.parametrize("field", ["privacy_policy_url", "terms_url"])
def test_empty_policy_link_is_named(catalog: Catalog, field: str) -> None:
    raw = valid_raw()
    raw[field] = "  "
    assert problems_of(raw, catalog) == [f"{field}: must not be empty"]


@pytest.mark.parametrize(
    ("path", "url"),
    [
        (("privacy_policy_url",), "http://example.com/privacy"),
        (("terms_url",), "http://example.com/terms"),
        (("logo_url",), "http://example.com/logo.png"),
        (("oauth", "authorize_url"), "http://example.com/oauth/authorize"),
        (("oauth", "token_url"), "http://example.com/oauth/token"),
        (("oauth", "revoke_url"), "http://example.com/oauth/revoke"),
        (("actions", 0, "url"), "http://api.example.com/messages"),
        # look-alikes of loopback hosts are not loopback
        (("terms_url",), "http://localhost.example.com/terms"),
        (("terms_url",), "http://127.0.0.1.example.com/terms"),
        (("terms_url",), "http://0.0.0.0/terms"),
    ],
)
def test_http_url_for_non_loopback_host_is_named(
    catalog: Catalog, path: tuple[Any, ...], url: str
) -> None:
    raw = valid_raw()
    target: Any = raw
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = url
    field = ".".join(str(p) for p in path).replace(".0.", "[0].")
    problems = problems_of(raw, catalog)
    assert problems == [
        f"{field}: {url!r} uses http; only https is allowed except for loopback hosts"
    ]


@pytest.mark.parametrize(
    "base", ["http://127.0.0.1:8000", "http://[::1]:8000", "http://localhost", "http://127.0.0.2"]
)
def test_http_is_accepted_for_loopback_hosts(catalog: Catalog, base: str) -> None:
    raw = valid_raw()
    raw["privacy_policy_url"] = f"{base}/privacy"
    raw["terms_url"] = f"{base}/terms"
    raw["oauth"]["authorize_url"] = f"{base}/oauth/authorize"
    raw["oauth"]["token_url"] = f"{base}/oauth/token"
    raw["actions"][0]["url"] = f"{base}/api"
    m = parse_manifest(raw, catalog, source=SOURCE)
    assert m.terms_url == f"{base}/terms"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://example.com/terms", "is not an absolute http(s) URL"),
        ("javascript:alert(1)", "is not an absolute http(s) URL"),
        ("/terms", "is not an absolute http(s) URL"),
        ("https://user:pw@example.com/terms", "must not carry credentials"),
        ("https://example.com:99999/terms", "is not a valid URL"),
    ],
)
def test_other_bad_urls_are_named(catalog: Catalog, url: str, fragment: str) -> None:
    raw = valid_raw()
    raw["terms_url"] = url
    assert problems_of(raw, catalog) == [f"terms_url: {url!r} {fragment}"]


@pytest.mark.parametrize("field", ["client_id", "client_secret"])
@pytest.mark.parametrize(
    "value", ["s3cr3t-inline-value", "env:", "env:1BAD", "ENV:EXAMPLE", "env:EXAMPLE\n"]
)
def test_inline_secret_instead_of_env_reference_is_named(
    catalog: Catalog, field: str, value: str
) -> None:
    raw = valid_raw()
    raw["oauth"][field] = value
    problems = problems_of(raw, catalog)
    assert problems == [
        f"oauth.{field}: must be a reference like 'env:EXAMPLE_CLIENT_ID', never an inline value"
    ]


def test_inline_secret_value_is_not_echoed(catalog: Catalog) -> None:
    raw = valid_raw()
    raw["oauth"]["client_secret"] = "hunter2-very-secret"
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw, catalog, source=SOURCE)
    assert "hunter2-very-secret" not in str(info.value)
    assert "hunter2-very-secret" not in repr(info.value.to_dict())


def test_duplicate_category_is_named(catalog: Catalog) -> None:
    raw = valid_raw()
    raw["data"].append({"category": "user.name", "purpose": "Again, for fun"})
    assert problems_of(raw, catalog) == ["data[3].category: 'user.name' is declared twice"]


def test_duplicate_action_name_is_named(catalog: Catalog) -> None:
    raw = valid_raw()
    raw["actions"].append({"name": "post_message", "url": "https://api.example.com/other"})
    assert problems_of(raw, catalog) == ["actions[1].name: 'post_message' is declared twice"]


@pytest.mark.parametrize("method", ["GET", "DELETE", "FETCH", ""])
def test_bad_method_is_named(catalog: Catalog, method: str) -> None:
    raw = valid_raw()
    raw["actions"][0]["method"] = method
    assert problems_of(raw, catalog) == [
        f"actions[0].method: {method!r} must be one of POST, PUT, PATCH"
    ]


@pytest.mark.parametrize("method", ["post", "PUT", "Patch"])
def test_methods_are_case_insensitive(catalog: Catalog, method: str) -> None:
    raw = valid_raw()
    raw["actions"][0]["method"] = method
    parse_manifest(raw, catalog, source=SOURCE)


@pytest.mark.parametrize(
    "bad_id",
    ["Example", "1example", "e", "ex ample", "ex.ample", "-example", "a" * 64, "", "example\n"],
)
def test_bad_id_is_named(catalog: Catalog, bad_id: str) -> None:
    raw = valid_raw()
    raw["id"] = bad_id
    problems = problems_of(raw, catalog)
    assert len(problems) == 1
    assert problems[0].startswith(f"id: {bad_id!r} must be lowercase letters")


@pytest.mark.parametrize("good_id", ["ex", "example", "my-chat_2", "a" * 63])
def test_good_ids_are_accepted(catalog: Catalog, good_id: str) -> None:
    raw = valid_raw()
    raw["id"] = good_id
    assert parse_manifest(raw, catalog, source=SOURCE).id == good_id


@pytest.mark.parametrize("param", ["state", "redirect_uri", "code_challenge", "response_type"])
def test_extra_authorize_params_cannot_override_protocol_params(
    catalog: Catalog, param: str
) -> None:
    raw = valid_raw()
    raw["oauth"]["extra_authorize_params"] = {param: "x", "prompt": "consent"}
    assert problems_of(raw, catalog) == [
        f"oauth.extra_authorize_params.{param}: is set by the broker and cannot be overridden"
    ]


def test_harmless_extra_authorize_params_are_kept(catalog: Catalog) -> None:
    raw = valid_raw()
    raw["oauth"]["extra_authorize_params"] = {"prompt": "consent", "access_type": "offline"}
    m = parse_manifest(raw, catalog, source=SOURCE)
    assert m.oauth.extra_authorize_params == {"prompt": "consent", "access_type": "offline"}


def test_all_meaning_problems_are_reported_at_once(catalog: Catalog) -> None:
    raw = valid_raw()
    raw["id"] = "Bad Id"
    raw["terms_url"] = "http://example.com/terms"
    raw["oauth"]["client_secret"] = "inline"
    raw["data"][0]["category"] = "user.nope"
    raw["data"][2]["category"] = "user.name"
    raw["actions"].append({"name": "post_message", "method": "GET", "url": "https://x.com/a"})
    problems = problems_of(raw, catalog)
    fields = [p.split(":", 1)[0] for p in problems]
    assert fields == [
        "id",
        "terms_url",
        "oauth.client_secret",
        "data[0].category",
        "data[2].category",
        "actions[1].name",
        "actions[1].method",
    ]


# --- shape pass ---------------------------------------------------------------------


def test_unknown_field_typo_is_named(catalog: Catalog) -> None:
    raw = valid_raw()
    raw["privacy_policy_ulr"] = raw.pop("privacy_policy_url")
    problems = problems_of(raw, catalog)
    assert sorted(problems) == [
        "privacy_policy_ulr: is not a manifest field",
        "privacy_policy_url: is required",
    ]


def test_unknown_nested_field_is_named_with_its_path(catalog: Catalog) -> None:
    raw = valid_raw()
    raw["oauth"]["scope"] = ["a"]
    raw["data"][1]["purpse"] = "typo"
    problems = problems_of(raw, catalog)
    assert "oauth.scope: is not a manifest field" in problems
    assert "data[1].purpse: is not a manifest field" in problems


def test_all_shape_problems_are_reported_at_once(catalog: Catalog) -> None:
    raw = valid_raw()
    del raw["name"]
    del raw["oauth"]["token_url"]
    raw["data"][0]["purpose"] = "x"
    raw["actions"][0]["name"] = "Post Message"
    raw["oauth"]["token_endpoint_auth_method"] = "private_key_jwt"
    problems = problems_of(raw, catalog)
    fields = sorted(p.split(":", 1)[0] for p in problems)
    assert fields == sorted(
        [
            "name",
            "oauth.token_url",
            "oauth.token_endpoint_auth_method",
            "data[0].purpose",
            "actions[0].name",
        ]
    )
    assert "name: is required" in problems
    assert "oauth.token_url: is required" in problems


def test_missing_oauth_table_and_empty_data(catalog: Catalog) -> None:
    raw = valid_raw()
    del raw["oauth"]
    raw["data"] = []
    problems = problems_of(raw, catalog)
    assert "oauth: is required" in problems
    assert any(p.startswith("data: ") for p in problems)


def test_wrong_type_is_named(catalog: Catalog) -> None:
    raw = valid_raw()
    raw["data"][0]["required"] = "maybe"
    problems = problems_of(raw, catalog)
    assert len(problems) == 1
    assert problems[0].startswith("data[0].required: ")


# --- files --------------------------------------------------------------------------


def test_load_manifest_file_round_trip(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "example.toml"
    path.write_text(VALID_TOML, encoding="utf-8")
    m = load_manifest_file(path, catalog)
    assert m.id == "example"
    assert m.required_categories == ("user.content.work_items",)
    assert m.actions[0].name == "post_message"


def test_file_problems_name_the_file(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "chatty.toml"
    path.write_text(VALID_TOML.replace("https://example.com/terms", "http://example.com/terms"))
    with pytest.raises(ManifestError) as info:
        load_manifest_file(path, catalog)
    assert "chatty.toml" in str(info.value)
    assert info.value.details["source"] == str(path)
    assert info.value.details["problems"] == [
        "terms_url: 'http://example.com/terms' uses http; only https is allowed "
        "except for loopback hosts"
    ]


def test_toml_syntax_error(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(VALID_TOML.replace('name = "Example Chat"', "name = Example Chat"))
    with pytest.raises(ManifestError) as info:
        load_manifest_file(path, catalog)
    assert "broken.toml" in str(info.value)
    assert "not valid TOML" in str(info.value)
    (problem,) = info.value.details["problems"]
    assert problem.startswith("(file): ")
    assert "line 2" in problem


def test_non_utf8_file(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes(VALID_TOML.replace("Example Chat", "Ex\xe4mple").encode("latin-1"))
    with pytest.raises(ManifestError) as info:
        load_manifest_file(path, catalog)
    assert "latin.toml" in str(info.value)


def test_missing_file(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ManifestError) as info:
        load_manifest_file(path, catalog)
    assert "absent.toml" in str(info.value)
    assert "cannot read" in str(info.value)
    assert info.value.details["problems"][0].startswith("(file): ")


# --- secrets by reference -----------------------------------------------------------


def test_resolve_secret_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_CLIENT_SECRET", "the-value")
    assert (
        resolve_secret("env:EXAMPLE_CLIENT_SECRET", connector_id="example", field="client_secret")
        == "the-value"
    )


@pytest.mark.parametrize("value", [None, ""])
def test_resolve_secret_unset_names_connector_field_and_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("EXAMPLE_CLIENT_SECRET", raising=False)
    else:
        monkeypatch.setenv("EXAMPLE_CLIENT_SECRET", value)
    with pytest.raises(ConfigurationError) as info:
        resolve_secret("env:EXAMPLE_CLIENT_SECRET", connector_id="example", field="client_secret")
    msg = str(info.value)
    assert "'example'" in msg
    assert "oauth.client_secret" in msg
    assert "EXAMPLE_CLIENT_SECRET" in msg
    assert info.value.details == {
        "connector": "example",
        "field": "oauth.client_secret",
        "variable": "EXAMPLE_CLIENT_SECRET",
    }


# --- per-connection settings, placeholders, hosts, revocation styles -----------------


def with_settings(**changes: Any) -> dict[str, Any]:
    raw = valid_raw()
    raw["settings"] = [
        {
            "name": "subdomain",
            "label": "Example subdomain",
            "pattern": "^[a-z0-9][a-z0-9-]{0,62}$",
            "example": "acme",
        }
    ]
    raw["oauth"]["authorize_url"] = "https://{subdomain}.example.com/oauth/authorize"
    raw["actions"][0]["url"] = "https://{subdomain}.example.com/api/messages"
    raw.update(changes)
    return raw


def test_declared_placeholders_are_accepted(catalog: Catalog) -> None:
    manifest = parse_manifest(with_settings(), catalog, source=SOURCE)
    assert [s.name for s in manifest.settings] == ["subdomain"]


def test_undeclared_placeholder_is_a_manifest_error_naming_the_field(catalog: Catalog) -> None:
    raw = with_settings()
    raw["actions"][0]["url"] = "https://api.example.com/{workspace}/messages"
    assert problems_of(raw, catalog) == [
        "actions[0].url: 'https://api.example.com/{workspace}/messages': placeholder "
        "{workspace} is not a declared setting"
    ]


def test_placeholders_are_not_allowed_in_policy_links(catalog: Catalog) -> None:
    raw = with_settings(terms_url="https://{subdomain}.example.com/terms")
    assert problems_of(raw, catalog) == [
        "terms_url: 'https://{subdomain}.example.com/terms' may not contain placeholders"
    ]


def test_setting_declarations_are_checked(catalog: Catalog) -> None:
    raw = with_settings()
    raw["settings"] += [
        {"name": "subdomain", "label": "Again", "pattern": ".*"},
        {"name": "client_id", "label": "Reserved", "pattern": ".*"},
        {"name": "bad", "label": "Bad regex", "pattern": "("},
        {"name": "region", "label": "Region", "pattern": "^(eu|us)$", "default": "asia"},
    ]
    problems = problems_of(raw, catalog)
    assert problems[0] == "settings[1].name: 'subdomain' is declared twice"
    assert problems[1] == "settings[2].name: 'client_id' is reserved by the broker"
    assert problems[2].startswith("settings[3].pattern: is not a valid regular expression")
    assert problems[3] == "settings[4].default: 'asia' does not match the pattern"


def test_hosts_and_revocation_rules(catalog: Catalog) -> None:
    raw = with_settings(hosts=["uploads.example.com", "{subdomain}.files.example.com", "a/b"])
    raw["oauth"] = {**raw["oauth"], "revoke_url": None, "revocation": "bearer"}
    assert problems_of(raw, catalog) == [
        "hosts[2]: 'a/b' must be a host name, optionally with :port",
        "oauth.revocation: needs oauth.revoke_url",
    ]


def test_validate_settings_fills_defaults_and_names_the_bad_setting(catalog: Catalog) -> None:
    raw = with_settings()
    raw["settings"].append(
        {
            "name": "region",
            "label": "Region",
            "pattern": "^(eu|us)$",
            "required": False,
            "default": "eu",
        }
    )
    manifest = parse_manifest(raw, catalog, source=SOURCE)
    assert manifest.validate_settings({"subdomain": "acme"}) == {
        "subdomain": "acme",
        "region": "eu",
    }
    cases = [
        (None, "settings.subdomain: is required (Example subdomain)"),
        ({"subdomain": "ACME!"}, "settings.subdomain: 'ACME!' is not a valid Example subdomain"),
        ({"subdomain": "acme", "other": "x"}, "settings.other: Example Chat has no such setting"),
        ({"subdomain": 3}, "settings.subdomain: 3 is not a valid Example subdomain"),
    ]
    for values, message in cases:
        with pytest.raises(InvalidInput) as info:
            manifest.validate_settings(values)
        assert info.value.message.startswith(message), info.value.message
        assert info.value.details["field"].startswith("settings.")


def test_file_errors_name_the_file_and_the_field(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(VALID_TOML.replace('url = "https://api', 'url = "https://{team}.api'))
    with pytest.raises(ManifestError) as info:
        load_manifest_file(path, catalog)
    assert info.value.message == f"{path}: invalid manifest"
    (problem,) = info.value.details["problems"]
    assert problem.startswith("actions[0].url:") and "{team} is not a declared setting" in problem
