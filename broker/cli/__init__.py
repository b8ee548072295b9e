"""The ``broker`` command: one module per command group, each with ``register``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from broker import __version__
from broker.cli import (
    admin,
    audit,
    catalog,
    connectors,
    disclose,
    operations,
    policies,
    receipts,
    serve,
    users,
    witness,
    worker,
)
from broker.core.errors import BrokerError

__all__ = ["build_parser", "main"]

GROUPS = (
    serve,
    worker,
    admin,
    connectors,
    catalog,
    audit,
    receipts,
    disclose,
    operations,
    witness,
    policies,
    users,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker", description="Third-party integration broker with scoped sharing."
    )
    parser.add_argument("--version", action="version", version=f"broker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ValidationError as exc:
        for err in exc.errors():
            name = "BROKER_" + "_".join(str(p) for p in err["loc"]).upper()
            print(f"error: {name}: {err['msg']}", file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for problem in exc.details.get("problems", []):
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `broker … | head`: the reader left; exit quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush is silent
        return 0
