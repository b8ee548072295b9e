"""``broker serve`` and ``broker demo``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from broker.cli import common
from broker.cli.common import catalog, say

if TYPE_CHECKING:
    from fastapi import FastAPI

    from broker.runtime import Runtime
    from broker.settings import Settings

__all__ = ["build_app", "register"]


def build_app(args: argparse.Namespace, *, demo: bool) -> tuple[FastAPI, Settings]:
    from broker.runtime import build_runtime
    from broker.web.app import create_app

    settings = common.settings(args)
    base = settings.resolved_base_url
    builtins = []
    mounts = {}
    provider = None
    if demo:
        from broker.demo import sandbox_connector, sandbox_setup

        provider, sandbox_app = sandbox_setup(settings.callback_url)
        builtins.append(sandbox_connector(catalog(settings), f"{base}/sandbox"))
        mounts["/sandbox"] = sandbox_app
    rt = build_runtime(settings, builtins=builtins)
    for line in rt.created:
        say(line)
    if not rt.created:
        say(f"using broker home {settings.home.resolve()}")
    report_reconcile(rt)
    for problem in rt.registry.problems:
        say(f"warning: connector {problem.source}: {problem.message}")
    app = create_app(rt, mounts=mounts)
    if demo:
        from broker.demo import demo_router
        from broker.flows.keys import create_api_key

        app.include_router(demo_router(rt, provider))
        _, raw = create_api_key(rt.engine, role="admin", label="demo")
        say(f"demo admin API key (shown once): {raw}")
        say(f"demo page: {base}/demo")
    say(f"broker listening on {base}  (OAuth callback {settings.callback_url})")
    return app, settings


def report_reconcile(rt: Runtime) -> None:
    from broker.flows.reconcile import reconcile

    for t in reconcile(rt):
        say(
            f"transfer {t.id} was interrupted (pending since {t.created_at:%Y-%m-%d %H:%M:%S}); "
            "marked failed — the third party may or may not have received it"
        )


def cmd_serve(args: argparse.Namespace, *, demo: bool = False) -> int:
    import uvicorn

    from broker.flows.checkpoints import start_checkpointing

    app, settings = build_app(args, demo=demo)
    checkpoints = start_checkpointing(app.state.runtime)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
    finally:
        checkpoints.stop()
    return 0


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
        p.set_defaults(func=func)
