"""``broker serve`` and ``broker demo``."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from broker.cli import common
from broker.cli.common import catalog, say
from broker.core.statuses import TransferStatus
from broker.core.times import rfc3339

if TYPE_CHECKING:
    from fastapi import FastAPI

    from broker.runtime import Runtime
    from broker.settings import Settings

__all__ = ["build_app", "public_demo_problem", "register"]


def public_demo_problem(settings: Settings) -> str | None:
    """Why this demo would be reachable from a network (its helpers hand out keys and
    data without authentication), or None when it binds and is addressed on loopback."""
    from urllib.parse import urlsplit

    from broker.core.urls import is_loopback_host

    if not is_loopback_host(settings.host):
        return f"--host {settings.host} is not a loopback address"
    base_host = urlsplit(settings.resolved_base_url).hostname
    if not is_loopback_host(base_host):
        return f"BROKER_BASE_URL {settings.resolved_base_url} is not on a loopback host"
    return None


def build_app(args: argparse.Namespace, *, demo: bool) -> tuple[FastAPI, Settings]:
    from broker.runtime import build_runtime
    from broker.web.app import create_app

    settings = common.settings(args)
    public = bool(getattr(args, "i_know_this_is_public", False))
    if demo and (problem := public_demo_problem(settings)):
        if not public:
            from broker.core.errors import ConfigurationError

            raise ConfigurationError(
                f"broker demo refuses to start: {problem}. The demo page hands out API keys "
                "without authentication; run it on 127.0.0.1, or pass "
                "--i-know-this-is-public if you really mean to expose it."
            )
        say(f"WARNING: {problem}; the demo is exposed (--i-know-this-is-public)")
    base = settings.resolved_base_url
    builtins = []
    mounts: dict[str, object] = {}
    provider = None
    if demo:
        from broker.demo import sandbox_connector, sandbox_setup

        provider, sandbox_app = sandbox_setup(settings.callback_url, public=public)
        builtins.append(sandbox_connector(catalog(settings), f"{base}/sandbox"))
        mounts["/sandbox"] = sandbox_app
    rt = build_runtime(settings, builtins=builtins)
    for line in rt.created:
        say(line)
    if not rt.created:
        say(f"using broker home {settings.home.resolve()}")
    report_reconcile(rt)
    for trouble in rt.registry.problems:
        say(f"warning: connector {trouble.source}: {trouble.message}")
    app = create_app(rt, mounts=mounts)
    if provider is not None:  # set when demo
        from broker.demo import demo_router, issue_demo_admin_key

        app.include_router(demo_router(rt, provider, public=public))
        raw, revoked = issue_demo_admin_key(rt)
        if revoked:
            say(f"revoked {len(revoked)} demo key(s) of earlier runs: {', '.join(revoked)}")
        say(f"demo admin API key (shown once): {raw}")
        say(f"demo page: {base}/demo")
    say(f"broker listening on {base}  (OAuth callback {settings.callback_url})")
    return app, settings


def report_reconcile(rt: Runtime) -> None:
    from broker.flows.reconcile import reconcile
    from broker.flows.revoke import resume_interrupted_revocations

    for connection_id in resume_interrupted_revocations(rt):
        say(f"connection {connection_id}: an interrupted revocation was finished")
    for t in reconcile(rt):
        say(
            f"transfer {t.id} was interrupted (pending since {rfc3339(t.created_at)}): "
            + (
                "sent again under its idempotency key"
                if t.status == TransferStatus.PENDING
                else "outcome_unknown — the third party may or may not have received it"
            )
        )


def cmd_serve(args: argparse.Namespace, *, demo: bool = False) -> int:
    import uvicorn

    from broker.flows.checkpoints import start_checkpointing
    from broker.flows.policy_checks import start_policy_checks
    from broker.flows.workers import ensure_workers

    if getattr(args, "listen_fd", None) is not None:
        return _serve_child(args)
    app, settings = build_app(args, demo=demo)
    rt = app.state.runtime
    checkpoints = start_checkpointing(rt)
    start_policy_checks(rt)  # the third parties' policy pages, checked daily
    workers = ensure_workers(rt)
    if workers is not None:
        say(f"{workers.threads} delivery worker(s) running as {workers.owner}")
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="info", access_log=False
    )
    sock = config.bind_socket()
    children = _delivery_processes(settings, demo=demo)
    siblings = _Siblings(sock, settings.processes - 1 if not demo else 0)
    if demo and settings.processes > 1:
        say("BROKER_PROCESSES is ignored by the demo (its sandbox is in-process)")
    _exit_cleanly_on_sigterm()
    try:
        siblings.start()
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        siblings.stop()
        _stop_all(children)
        rt.close()
        checkpoints.stop()
    return 0


def _exit_cleanly_on_sigterm() -> None:
    """uvicorn shuts down on SIGTERM and then raises the signal again with the handler
    it found: make that handler a clean exit, so the ``finally`` that stops the child
    processes and closes the runtime still runs."""

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


def _stop_when_orphaned(parent: int) -> None:
    """A sibling whose parent died without stopping it (``kill -9``) stops too, rather
    than serve on alone: it watches its parent id (re-parented: the parent is gone).
    ``parent`` comes from the parent itself, so one that died while this process was
    still starting is noticed too."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()


class _Siblings:
    """``BROKER_PROCESSES - 1`` more ``broker serve`` processes answering on the same
    listening socket (inherited), each with its own delivery workers; one that exits
    unexpectedly is started again (after a second, so a crash loop cannot spin)."""

    def __init__(self, sock: Any, count: int) -> None:
        self.sock = sock
        self.count = count
        self.children: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._guard = threading.Lock()
        self._watch: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        fd = self.sock.fileno()
        argv = ["serve", "--listen-fd", str(fd), "--parent-pid", str(os.getpid())]
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module, no input
            [sys.executable, "-m", "broker.cli", *argv],
            env=os.environ.copy(),
            pass_fds=[fd],
        )

    def start(self) -> None:
        if self.count <= 0:
            return
        self.children = [self._spawn() for _ in range(self.count)]
        pids = ", ".join(str(c.pid) for c in self.children)
        say(f"{self.count} more broker process(es) on the same socket: {pids}")
        self._watch = threading.Thread(target=self._keep, name="siblings", daemon=True)
        self._watch.start()

    def _keep(self) -> None:
        while not self._stopping.wait(1.0):
            with self._guard:  # never a new child once stop() has begun
                if self._stopping.is_set():
                    return
                for i, child in enumerate(self.children):
                    if child.poll() is not None:
                        say(f"broker process {child.pid} exited ({child.returncode}); restarting")
                        self.children[i] = self._spawn()

    def stop(self) -> None:
        with self._guard:
            self._stopping.set()
        _stop_all(self.children)


def _serve_child(args: argparse.Namespace) -> int:
    """A sibling of ``broker serve`` (BROKER_PROCESSES): the parent upgraded the schema
    and signs the timed checkpoints; this one answers requests and delivers."""
    import socket

    import uvicorn

    from broker.flows.checkpoints import start_checkpointing
    from broker.flows.workers import ensure_workers
    from broker.runtime import build_runtime
    from broker.web.app import create_app

    settings = common.settings(args)
    rt = build_runtime(settings, upgrade=False)
    app = create_app(rt)
    checkpoints = start_checkpointing(rt, timer=False)
    ensure_workers(rt)
    sock = socket.socket(fileno=args.listen_fd)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    _exit_cleanly_on_sigterm()
    _stop_when_orphaned(args.parent_pid or os.getppid())
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        rt.close()
        checkpoints.stop()
    return 0


def _delivery_processes(settings: Settings, *, demo: bool) -> list[subprocess.Popen[bytes]]:
    """``BROKER_DELIVERY_PROCESSES`` child ``broker worker`` processes, so delivery runs
    on other cores than the API (the database is shared; leases keep them apart)."""
    count = settings.delivery_processes
    if count and demo:
        say("BROKER_DELIVERY_PROCESSES is ignored by the demo (its sandbox is in-process)")
        return []
    children = []
    for _ in range(count):
        children.append(
            subprocess.Popen([sys.executable, "-m", "broker.cli", "worker"], env=os.environ.copy())
        )
    if children:
        say(f"{count} delivery process(es) started: {', '.join(str(c.pid) for c in children)}")
    return children


def cmd_demo(args: argparse.Namespace) -> int:
    return cmd_serve(args, demo=True)


def register(sub: Any) -> None:
    for name, func, help_ in (
        ("serve", cmd_serve, "run the API and pages"),
        ("demo", cmd_demo, "run with a built-in sandbox third party and a demo user"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--host", default=None, help="interface (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=None, help="port (default 8000)")
        # internal: a BROKER_PROCESSES sibling serving the parent's listening socket
        p.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
        p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
        if name == "demo":
            p.add_argument(
                "--i-know-this-is-public",
                action="store_true",
                help="allow a non-loopback --host or BROKER_BASE_URL (the demo page hands "
                "out keys without authentication)",
            )
        p.set_defaults(func=func)
