"""`broker demo` cannot be exposed by accident: it refuses a public host, revokes the keys
of its earlier runs, and its unauthenticated helpers answer loopback clients only."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from broker.cli import build_parser, main
from broker.cli.serve import build_app
from broker.core.errors import ConfigurationError
from tests.conftest import LiveServer, free_socket

OUTSIDER = ("203.0.113.5", 1234)
ANY = "0.0.0.0"  # noqa: S104 (the point: a demo asked to bind every interface)
HELPERS = [
    ("GET", "/"),
    ("GET", "/demo"),
    ("POST", "/demo/connect"),
    ("POST", "/demo/share"),
    ("POST", "/demo/me"),
    ("POST", "/demo/auditor-key"),
    ("GET", "/sandbox/api/received"),
]


@pytest.fixture
def demo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("BROKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _demo(*argv: str) -> FastAPI:
    app, _ = build_app(build_parser().parse_args(["demo", *argv]), demo=True)
    return app


@pytest.fixture
def demo_app(demo_home: Path) -> Iterator[FastAPI]:
    app = _demo("--port", "8123")
    yield app
    app.state.runtime.close()


# --- host refusal ----------------------------------------------------------------------


@pytest.mark.parametrize("host", [ANY, "::", "192.0.2.10"])
def test_demo_refuses_a_public_host(demo_home: Path, host: str, capsys) -> None:
    with pytest.raises(ConfigurationError, match="--i-know-this-is-public"):
        _demo("--host", host)
    assert main(["demo", "--host", host]) == 1
    assert "refuses to start" in capsys.readouterr().err
    assert not (demo_home / ".broker").exists()  # refused before anything was created


def test_demo_refuses_a_public_base_url(demo_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("BROKER_BASE_URL", "https://demo.example.com")
    with pytest.raises(ConfigurationError, match="BROKER_BASE_URL"):
        _demo()


def test_demo_on_loopback_and_public_on_purpose_start(demo_home: Path, capsys, monkeypatch) -> None:
    for argv in (["--host", "127.0.0.1"], ["--host", "::1"], ["--host", "localhost"]):
        _demo(*argv).state.runtime.close()
    # e.g. in a container: bound on every interface, reached through a mapped port
    monkeypatch.setenv("BROKER_BASE_URL", "http://127.0.0.1:8000")
    app = _demo("--host", ANY, "--i-know-this-is-public")
    try:
        assert "WARNING: --host 0.0.0.0 is not a loopback address" in capsys.readouterr().out
        # started public on purpose: the helpers answer the network too
        with TestClient(app, client=OUTSIDER, follow_redirects=False) as client:
            assert client.get("/demo").status_code == 200
            assert client.get("/sandbox/api/received").status_code == 200
    finally:
        app.state.runtime.close()


def test_serve_is_not_refused_a_public_host(demo_home: Path) -> None:
    app, _ = build_app(build_parser().parse_args(["serve", "--host", ANY]), demo=False)
    app.state.runtime.close()


# --- keys of earlier runs --------------------------------------------------------------


def _printed_key(out: str) -> str:
    return re.search(r"demo admin API key \(shown once\): (\S+)", out).group(1)


def test_each_start_revokes_the_previous_demo_keys(demo_home: Path, capsys) -> None:
    sock = free_socket()
    port = str(sock.getsockname()[1])
    first = _demo("--port", port)
    first_key = _printed_key(capsys.readouterr().out)
    server = LiveServer(first, sock).start()
    try:
        issued = httpx.post(f"{server.url}/demo/auditor-key", timeout=10)
        auditor = re.search(r'id="auditor-key">(brk_[^<]+)<', issued.text).group(1)
    finally:
        server.stop()
        first.state.runtime.close()
    second = _demo("--port", port)
    out = capsys.readouterr().out
    second_key = _printed_key(out)
    assert "revoked 2 demo key(s) of earlier runs" in out
    try:
        with TestClient(second, follow_redirects=False) as client:
            for key, status in ((first_key, 401), (auditor, 401), (second_key, 200)):
                resp = client.get("/v1/transfers", headers={"Authorization": f"Bearer {key}"})
                assert resp.status_code == status, key
    finally:
        second.state.runtime.close()


# --- loopback-only helpers -------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), HELPERS)
def test_helpers_refuse_clients_off_loopback(demo_app: FastAPI, method: str, path: str) -> None:
    with TestClient(demo_app, client=OUTSIDER, follow_redirects=False) as client:
        resp = client.request(method, path)
    assert resp.status_code == 403
    if path.startswith("/sandbox"):
        error = resp.json()["error"]
        assert error["code"] == "forbidden" and "loopback" in error["message"]
    else:
        assert "loopback" in resp.text and "forbidden" in resp.text
    assert "brk_" not in resp.text


@pytest.mark.parametrize(("method", "path"), HELPERS)
def test_helpers_refuse_requests_through_a_proxy(demo_app: FastAPI, method: str, path: str) -> None:
    """A reverse proxy on this machine connects from loopback; its header gives it away."""
    with TestClient(demo_app, client=("127.0.0.1", 5555), follow_redirects=False) as client:
        resp = client.request(method, path, headers={"X-Forwarded-For": OUTSIDER[0]})
    assert resp.status_code == 403


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_helpers_answer_loopback_clients(demo_app: FastAPI, address: str) -> None:
    with TestClient(demo_app, client=(address, 5555), follow_redirects=False) as client:
        assert client.get("/demo").status_code == 200
        assert client.get("/sandbox/api/received").json() == []
        key = client.post("/demo/auditor-key")
        assert key.status_code == 200 and "brk_" in key.text


def test_the_rest_of_the_broker_still_answers_the_network(demo_app: FastAPI) -> None:
    with TestClient(demo_app, client=OUTSIDER, follow_redirects=False) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/sandbox/privacy").status_code == 200
        assert client.get("/v1/catalog").status_code == 401  # the API asks for its key
