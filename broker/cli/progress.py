"""Progress of long commands, on standard error (standard output stays the result).

On a terminal: a ``rich`` bar with the count, the rate and the time left. Otherwise
(a pipe, a log file, CI): a plain line every ``INTERVAL`` seconds and one at the end,
e.g. ``audit verify: 65,536/300,000 entries (22%), 81,204 entries/s, about 3 s left``.
With ``--json`` (``quiet``): nothing. Flows take the callback ``progress(done, total)``
and know nothing of this.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["INTERVAL", "progress"]

INTERVAL = 2.0
"""Seconds between plain progress lines."""

Callback = Callable[[int, int], None]


def _eta(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s"


class _Lines:
    """Plain lines: the first update, then at most one per ``INTERVAL``, then the end."""

    def __init__(self, label: str, unit: str, out: TextIO, clock: Callable[[], float]) -> None:
        self.label, self.unit, self.out, self.clock = label, unit, out, clock
        self.start = clock()
        self.shown: float | None = None
        self.last: tuple[int, int] | None = None

    def __call__(self, done: int, total: int) -> None:
        self.last = (done, total)
        now = self.clock()
        if self.shown is None or now - self.shown >= INTERVAL:
            self.shown = now
            self._line(done, total, now)

    def finish(self) -> None:
        if self.last is not None:
            self._line(*self.last, self.clock())

    def _line(self, done: int, total: int, now: float) -> None:
        took = max(now - self.start, 1e-9)
        rate = done / took
        line = f"{self.label}: {done:,}"
        if total:
            line += f"/{total:,} {self.unit} ({100 * done // max(total, 1)}%)"
        else:
            line += f" {self.unit}"
        line += f", {rate:,.0f} {self.unit}/s"
        if total and rate and done < total:
            line += f", about {_eta((total - done) / rate)} left"
        print(line, file=self.out, flush=True)


@contextmanager
def progress(
    label: str,
    *,
    unit: str = "entries",
    quiet: bool = False,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Callback | None]:
    """A ``progress(done, total)`` callback for the work done inside the block (None
    when ``quiet``): a bar on a terminal, plain lines on ``out`` (default stderr) else."""
    if quiet:
        yield None
        return
    out = out or sys.stderr
    if not out.isatty():
        lines = _Lines(label, unit, out, clock)
        try:
            yield lines
        finally:
            lines.finish()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=out), transient=False) as bar:
        task = bar.add_task(label, total=None, rate="")
        started = clock()

        def update(done: int, total: int) -> None:
            rate = done / max(clock() - started, 1e-9)
            bar.update(task, completed=done, total=total or None, rate=f"{rate:,.0f} {unit}/s")

        yield update
