"""Flows decide; the store queries (issue 15.2). A flow that runs a statement
itself (``session.exec``, ``conn.execute``, ``session.scalars``) or builds one
(``select``/``update``/``insert``/``delete`` imported from SQLAlchemy or SQLModel)
fails here: the query belongs in a keyword-only function in ``broker/store``."""

from __future__ import annotations

import ast
from pathlib import Path

import broker.flows

FLOWS = Path(broker.flows.__file__).parent
RUNS = {"exec", "execute", "scalars", "scalar", "exec_driver_sql"}
BUILDS = {"select", "update", "insert", "delete"}
# Modules that still query for themselves; the list only shrinks.
NOT_YET: set[str] = set()


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in RUNS:
                found.append(f"line {node.lineno}: .{node.func.attr}(...)")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in {"sqlalchemy", "sqlmodel"}:
                built = sorted(a.name for a in node.names if a.name in BUILDS)
                if built:
                    found.append(f"line {node.lineno}: imports {', '.join(built)} from {root}")
    return found


def test_flows_leave_queries_to_the_store() -> None:
    offenders = {
        p.stem: o
        for p in sorted(FLOWS.glob("*.py"))
        if (o := _offences(p)) and p.stem not in NOT_YET
    }
    assert offenders == {}, "move these queries into broker/store:\n" + "\n".join(
        f"flows/{name}.py: {'; '.join(lines)}" for name, lines in offenders.items()
    )


def test_the_list_of_modules_still_querying_only_shrinks() -> None:
    # A module on the list that no longer queries must leave it.
    clean = sorted(m for m in NOT_YET if not _offences(FLOWS / f"{m}.py"))
    assert clean == [], f"remove from NOT_YET: {clean}"
