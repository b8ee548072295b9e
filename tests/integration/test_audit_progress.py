"""Progress of `audit verify`, `audit export-log` and `audit export`: on standard error
only, plain lines when it is not a terminal, a bar with rate and time left on a
pseudo-terminal, nothing with --json or --quiet; standard output unchanged."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from broker.cli import main
from broker.cli.progress import INTERVAL, progress
from tests.integration import test_cli
from tests.integration.test_cli import _append, _transfer

env, rt = test_cli.env, test_cli.rt  # the same fixtures: a real database, BROKER_* set


def test_verify_prints_progress_lines_on_stderr_and_the_result_on_stdout(env, rt, capsys) -> None:
    _append(rt, 6)
    assert main(["audit", "verify"]) == 0
    out, err = capsys.readouterr()
    assert out == "audit log intact: 6 entries verified" + out.split("verified", 1)[1]
    assert "audit verify: 6/6 entries (100%)" in err
    assert "entries/s" in err


def test_json_and_quiet_print_no_progress(env, rt, capsys) -> None:
    _append(rt, 3)
    assert main(["audit", "verify", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and '"ok": true' in out
    assert main(["audit", "verify", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_export_log_and_export_show_progress(env, rt, capsys, tmp_path: Path) -> None:
    _append(rt, 4)
    _transfer(rt, status="delivered", created=datetime.now(UTC))
    _transfer(rt, status="failed", created=datetime.now(UTC))
    assert main(["audit", "export-log", "-o", str(tmp_path / "log.jsonl")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("wrote 4 entries")
    assert "export-log: 4/4 entries (100%)" in err
    assert main(["audit", "export", "--format", "jsonl"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and "audit export" not in out
    assert "audit export: 2/2 transfers (100%)" in err
    assert main(["audit", "export", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_come_at_most_every_interval_and_at_the_end(tmp_path: Path) -> None:
    clock = Clock()
    with open(tmp_path / "err.txt", "w") as out, progress("work", out=out, clock=clock) as shown:
        assert shown is not None
        clock.now += 1
        shown(10, 100)  # first: shown
        clock.now += INTERVAL / 2
        shown(20, 100)  # too soon: not shown
        clock.now += INTERVAL
        shown(50, 100)  # shown, with the rate and the time left
        shown(60, 100)
    lines = (tmp_path / "err.txt").read_text().splitlines()
    assert lines[0] == "work: 10/100 entries (10%), 10 entries/s, about 9 s left"
    assert lines[1].startswith("work: 50/100 entries (50%)")
    assert "about" in lines[1]
    assert lines[-1].startswith("work: 60/100 entries (60%)")  # the end
    assert len(lines) == 3
    with progress("work", quiet=True) as shown:
        assert shown is None


def test_a_terminal_gets_a_bar_with_rate_and_time_left(env, rt) -> None:
    _append(rt, 5)
    master, slave = pty.openpty()
    environ = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    environ.pop("NO_COLOR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "broker.cli", "audit", "verify"],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=environ,
        timeout=120,
        check=False,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other end is closed and drained
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    terminal = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0
    assert proc.stdout.decode().startswith("audit log intact: 5 entries verified")
    assert "audit verify" in terminal and "5/5" in terminal and "entries/s" in terminal
    assert "\x1b[" in terminal  # drawn with terminal control sequences, not plain lines
    assert "audit verify: 5/5" not in terminal
