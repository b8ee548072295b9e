"""The bench scripts still run against the code they measure: each answers ``--help``
(so its imports resolve; a name moved in broker/ broke audit_scale.py unnoticed once)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_bench_script_imports_and_answers_help(script: str) -> None:
    result = subprocess.run(  # noqa: S603  (this interpreter, our own script)
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()
