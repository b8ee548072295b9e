"""Writing files only the broker's user may read: key rings, the audit head, the
checkpoint notes.

``write_private`` replaces a file atomically: a temporary file in the same
directory (created 0600, so the content is never world-readable), fsync,
``os.replace``, then fsync of the directory so the rename survives a crash.
A reader sees the old content or the new, never a mix.

``append_private`` adds one line to a file (created 0600) with one ``write`` in
append mode and an fsync: a line is whole or absent after a crash.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["append_private", "write_private"]


def write_private(path: Path, text: str, *, encoding: str = "utf-8") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding) as file:
            os.chmod(tmp, 0o600)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError, AttributeError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def append_private(path: Path, line: str) -> None:
    """Append ``line`` and a newline to ``path`` (created 0600), durably."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
