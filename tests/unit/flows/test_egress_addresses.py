"""The egress guard at the socket: a host is resolved once (a fake resolver here: no real
DNS), every address of the answer is checked, and the connection goes to the checked
address; private, loopback, link-local, CGNAT and metadata addresses are refused unless
the manifest's host is itself loopback (issue 9, point 4)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpcore
import httpx
import pytest

from broker.core.addresses import PinnedTransport, address_problem, checked_addresses
from broker.core.catalog import default_catalog
from broker.core.connector import Connector, ConnectorSource
from broker.core.egress import EgressTransport
from broker.core.errors import EgressDenied, InvalidInput
from broker.core.manifest import parse_manifest
from broker.flows.connect import create_connect_session
from broker.flows.connector_calls import (
    connection_host_problem,
    egress_network,
    egress_transport,
)
from broker.runtime import build_runtime
from tests.unit.core.test_manifest import valid_raw


class FakeResolver:
    """Answers from a table and counts the questions."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError("Name or service not known")
        return self.answers[host]


class Refused(httpcore.ConnectError):
    pass


class RecordingBackend(httpcore.NetworkBackend):
    """Records where a socket would have been opened, and opens none."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    def connect_tcp(self, host: str, port: int, **kwargs: Any) -> httpcore.NetworkStream:
        self.connects.append((host, port))
        raise Refused("recorded, not connected")


# --- which addresses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("0.0.0.0", "unspecified"),  # noqa: S104
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "metadata"),
        ("2002:a00:1::", "private"),  # 6to4 around 10.0.0.1
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 around 169.254.169.254
        ("192.0.2.1", "private"),  # documentation range (Python counts it private)
        ("198.18.0.1", "private"),  # benchmarking range
    ],
)
def test_non_public_addresses_are_refused(address: str, why: str) -> None:
    problem = address_problem(address)
    assert problem is not None and why in problem


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_are_fine(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize(
    "answer",
    [
        ["169.254.169.254"],
        ["10.0.0.1"],
        ["127.0.0.1"],  # loopback for a host that is not loopback
        ["::1"],
        ["fd00::1"],
        ["100.64.0.1"],
        ["93.184.216.34", "10.0.0.1"],  # one public and one private: the whole answer
        ["2606:4700::1111", "::ffff:127.0.0.1"],
    ],
)
def test_an_answer_with_any_bad_address_is_refused(answer: list[str]) -> None:
    resolver = FakeResolver({"api.example.com": answer})
    with pytest.raises(EgressDenied, match=r"api\.example\.com resolves to"):
        checked_addresses("api.example.com", 443, resolver=resolver)


def test_a_public_answer_is_kept_in_order() -> None:
    resolver = FakeResolver({"api.example.com": ["93.184.216.34", "2606:4700::1111"]})
    assert checked_addresses("api.example.com", 443, resolver=resolver) == [
        "93.184.216.34",
        "2606:4700::1111",
    ]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "acme.localhost"])
def test_a_loopback_host_may_reach_loopback_without_dns(host: str) -> None:
    resolver = FakeResolver({})
    addresses = checked_addresses(host, 80, resolver=resolver)
    assert addresses in (["127.0.0.1"], ["::1"])
    assert resolver.asked == []  # localhost names are pinned, not looked up


def test_a_private_ip_literal_host_is_refused_without_dns() -> None:
    resolver = FakeResolver({})
    with pytest.raises(EgressDenied):
        checked_addresses("10.1.2.3", 443, resolver=resolver)
    assert resolver.asked == []


def test_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    with pytest.raises(httpcore.ConnectError, match="does not resolve"):
        checked_addresses("nope.example.com", 443, resolver=FakeResolver({}))


# --- the transport -----------------------------------------------------------------


def guarded(resolver: FakeResolver, backend: RecordingBackend) -> tuple[EgressTransport, Any]:
    pinned = PinnedTransport(resolver=resolver, network_backend=backend)
    transport = EgressTransport(
        pinned,
        connector_id="example",
        allowed={("api.example.com", 443), ("acme.example.com", 443)},
        sleep=lambda s: None,
    )
    return transport, httpx.Client(transport=transport)


def test_the_socket_opens_to_the_checked_address_and_dns_is_asked_once() -> None:
    resolver = FakeResolver({"api.example.com": ["93.184.216.34"]})
    backend = RecordingBackend()
    _transport, client = guarded(resolver, backend)
    with client, pytest.raises(httpx.ConnectError):
        client.post("https://api.example.com/messages", json={})
    # retried like any connection that could not be opened: each time to the checked
    # address (never to the name, so no second, rebindable, lookup inside connect)
    assert backend.connects and set(backend.connects) == {("93.184.216.34", 443)}
    assert resolver.asked == ["api.example.com"] * len(backend.connects)


def test_a_rebind_between_check_and_connect_cannot_win() -> None:
    answers = iter([["93.184.216.34"], ["169.254.169.254"]])

    def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    backend = RecordingBackend()
    pinned = PinnedTransport(resolver=rebinding, network_backend=backend)
    with pytest.raises(httpx.ConnectError):
        pinned.handle_request(httpx.Request("GET", "https://api.example.com/"))
    assert backend.connects == [("93.184.216.34", 443)]  # the answer that was checked


@pytest.mark.parametrize("answer", [["169.254.169.254"], ["93.184.216.34", "10.0.0.1"]])
def test_the_guard_refuses_and_records_before_any_socket(answer: list[str]) -> None:
    resolver = FakeResolver({"acme.example.com": answer})
    backend = RecordingBackend()
    transport, client = guarded(resolver, backend)
    with client, pytest.raises(EgressDenied, match=r"refused: acme\.example\.com resolves to"):
        client.post("https://acme.example.com/api", json={})
    assert backend.connects == []
    assert transport.log.refused == ["https://acme.example.com"]
    (attempt,) = transport.log.attempts  # not retried
    assert attempt["error"].startswith("refused before connecting: acme.example.com resolves")


class _Hello(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(201)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "sandbox.localhost"])
def test_a_loopback_manifest_host_still_works(host: str, loopback_server: int) -> None:
    resolver = FakeResolver({})
    transport = EgressTransport(
        PinnedTransport(resolver=resolver),
        connector_id="sandbox",
        allowed={(host, loopback_server)},
    )
    with httpx.Client(transport=transport) as client:
        resp = client.post(f"http://{host}:{loopback_server}/api", json={})
    assert resp.status_code == 201
    assert resolver.asked == []


# --- wired into the runtime ---------------------------------------------------------


def tenant_connector() -> Connector:
    raw = valid_raw()
    raw["settings"] = [{"name": "tenant", "label": "Tenant", "pattern": "^[a-z0-9-]+$"}]
    raw["oauth"]["authorize_url"] = "https://{tenant}.example.com/oauth/authorize"
    raw["actions"][0]["url"] = "https://{tenant}.example.com/api/messages"
    manifest = parse_manifest(raw, default_catalog(), source="test")
    return Connector(manifest, ConnectorSource("builtin", "test"))


def test_the_runtime_pins_connector_requests_and_checks_new_connections(make_settings) -> None:
    connector = tenant_connector()
    rt = build_runtime(make_settings(), builtins=[connector], plugins=[], upgrade=True)
    try:
        resolver = FakeResolver({"acme.example.com": ["93.184.216.34", "169.254.169.254"]})
        egress_network(rt).backend.resolver = resolver
        # at connection time
        problem = connection_host_problem(rt, connector, {"tenant": "acme"})
        assert problem is not None and "acme.example.com resolves to a cloud metadata" in problem
        # before every request
        transport = egress_transport(rt, connector, {"tenant": "acme"}, token=None, refresh=None)
        with httpx.Client(transport=transport) as client, pytest.raises(EgressDenied):
            client.post("https://acme.example.com/api/messages", json={})
        assert transport.log.refused == ["https://acme.example.com"]
        resolver.answers["acme.example.com"] = ["93.184.216.34"]
        assert connection_host_problem(rt, connector, {"tenant": "acme"}) is None
    finally:
        rt.close()


def test_a_test_transport_is_left_alone_and_nothing_is_resolved(make_settings) -> None:
    connector = tenant_connector()
    mock = httpx.MockTransport(lambda request: httpx.Response(201, json={}))
    rt = build_runtime(
        make_settings(), builtins=[connector], plugins=[], upgrade=True, transport=mock
    )
    try:
        resolver = FakeResolver({})
        egress_network(rt).backend.resolver = resolver
        assert connection_host_problem(rt, connector, {"tenant": "acme"}) is None
        transport = egress_transport(rt, connector, {"tenant": "acme"}, token=None, refresh=None)
        with httpx.Client(transport=transport) as client:
            assert client.post("https://acme.example.com/api/messages").status_code == 201
        assert resolver.asked == []
    finally:
        rt.close()


@pytest.mark.parametrize("value", ["2852039166", "0x7f000001", "localhost", "a.b", "127.0.0.1"])
def test_a_connect_session_refuses_a_host_value_that_is_not_one_label(
    value: str, make_settings
) -> None:
    connector = tenant_connector()
    rt = build_runtime(make_settings(), builtins=[connector], plugins=[], upgrade=True)
    try:
        with pytest.raises(InvalidInput) as info:
            create_connect_session(
                rt, user_id="u1", connector_id=connector.id, settings={"tenant": value}
            )
        assert info.value.details["field"] == "settings.tenant"
    finally:
        rt.close()


def test_the_runtime_client_checks_addresses_for_oauth_calls_too(make_settings) -> None:
    # Token, refresh and revocation requests go through rt.http, not a connector's
    # guarded client: its default transport is the pinned one as well.
    from broker.core.manifest import OAuthSettings
    from broker.core.oauth import ClientCredentials, refresh_tokens
    from broker.flows.connector_calls import egress_network
    from broker.runtime import build_runtime

    rt = build_runtime(make_settings(), builtins=[], plugins=[], upgrade=True)
    try:
        resolver = FakeResolver({"auth.example.com": ["169.254.169.254"]})
        egress_network(rt).backend.resolver = resolver
        oauth = OAuthSettings(
            authorize_url="https://auth.example.com/authorize",
            token_url="https://auth.example.com/token",
            client_id="env:X",
            client_secret="env:Y",
        )
        with pytest.raises(EgressDenied, match="metadata address"):
            refresh_tokens(rt.http, oauth, ClientCredentials("id", "secret"), refresh_token="r")
        assert resolver.asked  # it was resolved once, then refused before connecting
    finally:
        rt.close()
