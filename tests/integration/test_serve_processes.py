"""`broker serve` with BROKER_PROCESSES=2: a second process answers on the same socket,
is started again if it dies, and stops with the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker.store.db import create_db_engine, upgrade_schema
from tests.conftest import free_socket


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended since the listing
            continue
        found.extend(int(p) for p in text)
    return found


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _siblings(pid: int) -> list[int]:
    """Children of ``pid`` that serve its socket (``--listen-fd``)."""
    out = []
    for child in _children(pid):
        try:
            if "--listen-fd" in _cmdline(child):
                out.append(child)
        except FileNotFoundError:
            pass
    return out


def _wait_for(predicate, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` (a state change in another process) until it holds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env |= {
        "BROKER_HOME": str(tmp_path / "home"),
        "BROKER_PROCESSES": "2",
        "BROKER_WORKERS": "1",
    }
    env["BROKER_DATABASE_URL"] = database_url
    engine = create_db_engine(database_url)  # as an operator would: `broker db upgrade`
    upgrade_schema(engine)
    engine.dispose()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "broker.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return proc.poll() is not None  # exited: fail below rather than wait

    try:
        _wait_for(up, "the broker to answer")
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_second_process_serves_the_socket_and_is_replaced_when_it_dies(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, base = server
    (sibling,) = _wait_for(lambda: _siblings(proc.pid), "the sibling process")
    # the sibling answers too: stop the parent from accepting (SIGSTOP) and ask
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    finally:
        os.kill(proc.pid, signal.SIGCONT)

    os.kill(sibling, signal.SIGKILL)
    (replacement,) = _wait_for(
        lambda: [p for p in _siblings(proc.pid) if p != sibling], "a replacement sibling"
    )
    assert replacement != sibling
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not Path(f"/proc/{replacement}").exists() or _is_zombie(replacement)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_a_sibling_stops_when_its_parent_is_killed(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, _base = server
    (sibling,) = _wait_for(lambda: _siblings(proc.pid), "the sibling process")
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup in the parent
    proc.wait(timeout=30)
    _wait_for(lambda: _is_zombie(sibling) or not Path(f"/proc/{sibling}").exists(), "it to stop")
