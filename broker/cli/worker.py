"""``broker worker``: delivery workers alone, on the shared database."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from broker.cli.common import runtime, say

__all__ = ["register"]


def cmd_worker(args: argparse.Namespace) -> int:
    from broker.flows.checkpoints import start_checkpointing
    from broker.flows.workers import start_workers

    rt = runtime()
    threads = args.threads if args.threads is not None else max(rt.settings.workers, 1)
    checkpoints = start_checkpointing(rt)  # this process appends too: it signs its share
    workers = start_workers(rt, threads=threads)
    say(f"{threads} delivery worker(s) running as {workers.owner}; Ctrl-C or SIGTERM stops")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        done.wait()
    finally:
        say("stopping: running deliveries finish, queued ones go back to the queue")
        rt.close()
        checkpoints.stop()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="run delivery workers only (scale out on PostgreSQL)")
    p.add_argument(
        "--threads", type=int, default=None, help="worker threads (default BROKER_WORKERS)"
    )
    p.set_defaults(func=cmd_worker)
