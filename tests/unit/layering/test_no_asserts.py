"""No ``assert`` guards in the broker's own code: ``python -O`` strips them, and a
broken invariant should say what broke (``InvariantBroken``, or an explicit ``if …:
raise``), not raise a bare ``AssertionError``. Found with ``ast``, so the asserts in
the test code ``broker connectors new`` writes out (string templates in
``broker/cli/scaffold.py``) are not statements and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

import broker

PACKAGE = Path(broker.__file__).parent

ALLOWED = {
    # The connector test kit: its asserts are the checks it runs under pytest.
    "testing",
}


def _allowed(relative: str) -> bool:
    return any(relative == a or relative.startswith(f"{a}/") for a in ALLOWED)


def asserts_in(source: str, name: str) -> list[int]:
    """The line of every ``assert`` statement in ``source``."""
    tree = ast.parse(source, filename=name)
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]


def test_the_probe_finds_statements_and_not_strings() -> None:
    source = 'x = 1\nassert x\nTEMPLATE = """\nassert not_code\n"""\ndef f():\n    assert x\n'
    assert asserts_in(source, "probe.py") == [2, 7]


def test_the_broker_has_no_assert_statements() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50, "the walk found the package's modules"
    found = [
        f"broker/{relative}:{line}"
        for path in files
        if not _allowed(relative := path.relative_to(PACKAGE).as_posix())
        for line in asserts_in(path.read_text(encoding="utf-8"), str(path))
    ]
    assert found == [], "raise an error of broker.core.errors (e.g. InvariantBroken) instead"
