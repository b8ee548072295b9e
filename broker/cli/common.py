"""Helpers shared by the command modules: settings, runtime, output."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.core.catalog import Catalog
    from broker.flows.audit import TransferFilter
    from broker.runtime import Runtime
    from broker.settings import Settings

__all__ = [
    "add_transfer_filters",
    "catalog",
    "runtime",
    "say",
    "settings",
    "transfer_filter",
]


def settings(args: argparse.Namespace | None = None) -> Settings:
    """Settings from the environment, with --host/--port applied when given."""
    from broker.settings import Settings

    overrides: dict[str, Any] = {}
    host, port = getattr(args, "host", None), getattr(args, "port", None)
    if host:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    return Settings(**overrides)


def say(line: str) -> None:
    print(line, flush=True)


def runtime(upgrade: bool | None = None) -> Runtime:
    from broker.runtime import build_runtime

    return build_runtime(settings(), upgrade=upgrade)


def catalog(s: Settings) -> Catalog:
    from broker.runtime import catalog_of

    return catalog_of(s)


def add_transfer_filters(p: argparse.ArgumentParser) -> None:
    for name in ("user", "connector", "category"):
        p.add_argument(f"--{name}", default=None)
    from broker.core.statuses import TransferStatus

    p.add_argument("--status", choices=list(TransferStatus))
    for name, word in (("since", "at or after"), ("until", "strictly before")):
        p.add_argument(
            f"--{name}",
            default=None,
            metavar="TIME",
            help=f"transfers created {word} this ISO 8601 time with a zone, e.g. 2026-01-31T12:00Z",
        )


def transfer_filter(args: argparse.Namespace) -> TransferFilter:
    from broker.flows.audit import TransferFilter

    return TransferFilter.parse(
        user=args.user,
        connector=args.connector,
        category=args.category,
        status=args.status,
        since=args.since,
        until=args.until,
    )
