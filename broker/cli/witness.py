"""``broker witness``: run a small C2SP tlog-witness (``broker.witness_server``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from broker.cli.common import say

__all__ = ["register"]


def _log_keys(args: argparse.Namespace) -> list[Any]:
    from broker.core.errors import ConfigurationError
    from broker.witness_server import load_log_keys

    text = "\n".join(args.log_key)
    for name in args.log_keys:
        text += "\n" + Path(name).read_text(encoding="utf-8")
    keys = load_log_keys(text)
    if not keys:
        raise ConfigurationError("no log verifier key: give --log-keys FILE or --log-key VKEY")
    return keys


def cmd_witness_key(args: argparse.Namespace) -> int:
    from broker.witness_server import load_or_create_key

    signer, created = load_or_create_key(Path(args.state), args.name)
    if created:
        say(f"created witness key {signer.verifier.key_id.hex()} in {args.state}")
    say(signer.verifier.vkey)
    return 0


def cmd_witness_serve(args: argparse.Namespace) -> int:
    import socket

    import uvicorn

    from broker.witness_server import DB_FILE, WitnessApp, WitnessState, load_or_create_key

    state_dir = Path(args.state)
    signer, created = load_or_create_key(state_dir, args.name)
    keys = _log_keys(args)
    app = WitnessApp(WitnessState(state_dir / DB_FILE), signer, keys, args.prefix.rstrip("/"))
    # Bound before saying so: a client that read the address can connect at once.
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    host, port = args.host, sock.getsockname()[1]
    if created:
        say(f"created witness key {signer.verifier.key_id.hex()} in {state_dir} (mode 0600)")
    say(f"witness {signer.name}: verifier key {signer.verifier.vkey}")
    say(f"  logs: {', '.join(sorted({k.name for k in keys}))}")
    say(f"  listening on http://{host}:{port}{app.prefix}/add-checkpoint")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def register(sub: Any) -> None:
    witness = sub.add_parser("witness", help="a C2SP tlog-witness for broker logs").add_subparsers(
        dest="witness", required=True
    )
    p = witness.add_parser("serve", help="verify and cosign checkpoints (add-checkpoint)")
    p.add_argument("--state", required=True, help="directory: the witness key and its records")
    p.add_argument("--name", default=None, help="the witness's name (first run), e.g. host/w1")
    p.add_argument(
        "--log-keys", action="append", default=[], help="file of log verifier keys (repeatable)"
    )
    p.add_argument("--log-key", action="append", default=[], help="one log verifier key (vkey)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7380, help="0: any free port")
    p.add_argument("--prefix", default="", help="URL path before /add-checkpoint")
    p.set_defaults(func=cmd_witness_serve)
    p = witness.add_parser("key", help="print the witness's verifier key (creating it)")
    p.add_argument("--state", required=True)
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_witness_key)
