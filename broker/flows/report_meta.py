"""What pins a report to a verifiable state: when it was generated, by which
controller (``BROKER_PLATFORM_NAME``), and the log state it was computed from (the
latest signed checkpoint's tree size and root, and the chain head).

Every report carries it: JSON and the API as a ``report`` object, CSV as ``#``
comment lines before the header, YAML as ``#`` comments, HTML as a paragraph
under the title. Anyone holding the report can then check that checkpoint
(``GET /v1/audit/checkpoint``, ``broker audit verify-export``) and ask for
consistency proofs from it.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from broker.core.errors import NotFound
from broker.runtime import Runtime
from broker.store.audit import latest_head
from broker.store.tree import latest_checkpoint

__all__ = ["meta_comment_lines", "report_meta"]


def report_meta(rt: Runtime) -> dict[str, Any]:
    """``generated_at`` (RFC 3339 UTC), ``controller`` (None when not configured),
    ``checkpoint`` (``tree_size``, ``root_hash``, ``time``, ``origin``; None before
    the first one) and ``head`` (``seq``, ``hash`` of the chain; None when empty)."""
    try:
        row = latest_checkpoint(rt.engine)
        checkpoint: dict[str, Any] | None = {
            "tree_size": row.tree_size,
            "root_hash": row.root_hash,
            "time": row.time,
            "origin": row.origin,
        }
    except NotFound:
        checkpoint = None
    head = latest_head(rt.engine)
    now = rt.clock().astimezone(UTC)
    return {
        "generated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "controller": rt.settings.platform_name,
        "checkpoint": checkpoint,
        "head": {"seq": head.seq, "hash": head.hash} if head else None,
    }


def meta_comment_lines(meta: dict[str, Any]) -> list[str]:
    """The metadata as ``# name: value`` lines (CSV, YAML, text), each without newline."""
    cp, head = meta.get("checkpoint"), meta.get("head")
    return [
        f"# generated_at: {meta['generated_at']}",
        f"# controller: {meta['controller'] or '(not set: BROKER_PLATFORM_NAME)'}",
        f"# log_checkpoint_tree_size: {cp['tree_size'] if cp else '(no checkpoint signed yet)'}",
        f"# log_checkpoint_root_hash: {cp['root_hash'] if cp else ''}",
        f"# log_head_seq: {head['seq'] if head else 0}",
    ]
