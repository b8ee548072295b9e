"""URL rules: what a manifest may link to, and which return URLs the allow-list admits."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.core.urls import is_allowed_return_url, is_loopback_host, url_problem

ALLOW = ["https://app.example.com/integrations"]


# --- url_problem --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "https://example.com/privacy",
        "https://example.com:8443/a?b=c#d",
        "HTTPS://EXAMPLE.COM/x",
        "http://127.0.0.1/cb",
        "http://127.0.0.1:8000/cb",
        "http://127.10.20.30/cb",
        "http://[::1]/cb",
        "http://[::1]:8000/cb",
        "http://localhost/cb",
        "http://LocalHost:3000/cb",
    ],
)
def test_acceptable_urls(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/privacy",
        "http://localhost.example.com/",
        "http://localhost.evil/",
        "http://127.0.0.1.nip.io/",
        "http://0.0.0.0/",
        "http://10.0.0.1/",
        "http://[::2]/",
        "http://mylocalhost/",
    ],
)
def test_http_for_a_non_loopback_host(url: str) -> None:
    assert url_problem(url) == (
        f"{url!r} uses http; only https is allowed except for loopback hosts"
    )


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:text/html,hi",
        "ftp://example.com/file",
        "file:///etc/passwd",
        "//example.com/path",
        "/relative/path",
        "example.com/privacy",
        "https://",
        "https:///path-without-host",
        "",
    ],
)
def test_not_an_absolute_http_url(url: str) -> None:
    assert url_problem(url) == f"{url!r} is not an absolute http(s) URL"


@pytest.mark.parametrize(
    "url",
    ["https://user@example.com/", "https://user:pw@example.com/", "https://:pw@example.com/"],
)
def test_credentials_in_url(url: str) -> None:
    assert url_problem(url) == f"{url!r} must not carry credentials"


@pytest.mark.parametrize(
    "url", ["https://example.com:99999/", "https://example.com:abc/", "https://[::1/"]
)
def test_invalid_url(url: str) -> None:
    assert url_problem(url) == f"{url!r} is not a valid URL"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("[::1]", True),
        ("128.0.0.1", False),
        ("localhost.example.com", False),
        ("example.com", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback_host(host: str | None, expected: bool) -> None:
    assert is_loopback_host(host) is expected


# --- is_allowed_return_url ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/integrations",
        "https://app.example.com/integrations/",
        "https://app.example.com/integrations/done",
        "https://app.example.com/integrations/done?x=1",
        "https://app.example.com/integrations/a/b/c?x=1&y=2#frag",
        "https://app.example.com/integrations?status=ok",
        "https://APP.Example.COM/integrations/done",
        "HTTPS://app.example.com/integrations/done",
    ],
)
def test_allowed(url: str) -> None:
    assert is_allowed_return_url(url, ALLOW) is True


@pytest.mark.parametrize(
    "url",
    [
        # another host that merely starts with the allowed one
        "https://app.example.com.evil.com/integrations/done",
        "https://app.example.comevil.com/integrations",
        "https://evil.com/app.example.com/integrations",
        "https://evil.com/?next=https://app.example.com/integrations",
        # a sibling path that merely starts with the allowed one
        "https://app.example.com/integrationsX",
        "https://app.example.com/integrations-evil/done",
        "https://app.example.com/integrations.evil",
        "https://app.example.com/",
        "https://app.example.com",
        "https://app.example.com/other/integrations",
        # path traversal out of the allowed path, plain or encoded
        "https://app.example.com/integrations/../admin",
        "https://app.example.com/integrations/./../admin",
        "https://app.example.com/integrations/%2e%2e/admin",
        "https://app.example.com/integrations/%2E%2E/admin",
        "https://app.example.com/integrations%2f..%2fadmin",
        "https://app.example.com/integrations/..",
        "https://app.example.com/integrations\\..\\admin",
        # scheme, port and credentials
        "http://app.example.com/integrations/done",
        "https://app.example.com:8443/integrations/done",
        "https://user@app.example.com/integrations/done",
        "https://user:pw@app.example.com/integrations/done",
        "https://app.example.com@evil.com/integrations/done",
        # not a navigable http(s) URL at all
        "javascript:alert(1)",
        "javascript://app.example.com/integrations/%0aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "//app.example.com/integrations/done",
        "/integrations/done",
        "app.example.com/integrations",
        "https://app.example.com:99999/integrations",
        "",
    ],
)
def test_refused(url: str) -> None:
    assert is_allowed_return_url(url, ALLOW) is False


def test_empty_allow_list_refuses_everything() -> None:
    assert is_allowed_return_url("https://app.example.com/integrations", []) is False


def test_trailing_slash_in_the_allow_list_is_the_same_prefix() -> None:
    allow = ["https://app.example.com/integrations/"]
    assert is_allowed_return_url("https://app.example.com/integrations", allow)
    assert is_allowed_return_url("https://app.example.com/integrations/x", allow)
    assert not is_allowed_return_url("https://app.example.com/integrationsX", allow)


def test_host_only_entry_allows_every_path_on_that_origin_only() -> None:
    allow = ["https://app.example.com"]
    assert is_allowed_return_url("https://app.example.com/anything/at/all?x=1", allow)
    assert is_allowed_return_url("https://app.example.com", allow)
    assert not is_allowed_return_url("https://app.example.com.evil.com/", allow)
    assert not is_allowed_return_url("http://app.example.com/", allow)


def test_explicit_port_must_match() -> None:
    allow = ["https://app.example.com:8443/integrations"]
    assert is_allowed_return_url("https://app.example.com:8443/integrations/x", allow)
    assert not is_allowed_return_url("https://app.example.com/integrations/x", allow)
    assert not is_allowed_return_url("https://app.example.com:9443/integrations/x", allow)


def test_http_entry_allows_http_not_https() -> None:
    allow = ["http://localhost:3000/cb"]
    assert is_allowed_return_url("http://localhost:3000/cb?ok=1", allow)
    assert not is_allowed_return_url("https://localhost:3000/cb", allow)


def test_any_of_several_entries() -> None:
    allow = ["https://a.example.com/x", "https://b.example.com/y"]
    assert is_allowed_return_url("https://b.example.com/y/z", allow)
    assert not is_allowed_return_url("https://b.example.com/x", allow)


def test_a_broken_entry_is_skipped_not_fatal() -> None:
    allow = ["https://bad.example.com:99999/", "https://app.example.com/integrations"]
    assert is_allowed_return_url("https://app.example.com/integrations/x", allow)
    assert not is_allowed_return_url("https://bad.example.com:99999/", allow)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~%/?#=&:@", max_size=40))
def test_anything_allowed_stays_on_the_origin_and_under_the_path(suffix: str) -> None:
    url = "https://app.example.com/integrations" + suffix
    if is_allowed_return_url(url, ALLOW):
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == ("https", "app.example.com", None)
        assert parts.username is None
        path = unquote(parts.path)
        assert path == "/integrations" or path.startswith("/integrations/")
        assert ".." not in path.split("/")
