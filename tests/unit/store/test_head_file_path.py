"""The audit head file is written where BROKER_HOME pointed when the head was
committed, even if the process changes its working directory before the
background writer gets to it (a relative home must not follow the cwd)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.core.audit_chain import ChainHead, read_head
from broker.store.audit import _WRITER, flush_head_files


def test_a_relative_head_path_is_fixed_when_submitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, later = tmp_path / "first", tmp_path / "later"
    (first / ".broker").mkdir(parents=True)
    later.mkdir()
    monkeypatch.chdir(first)
    with _WRITER._write_lock:  # hold the background writer until we have moved
        _WRITER.submit(Path(".broker/audit.head"), ChainHead(seq=3, hash="ab" * 32))
        os.chdir(later)
    flush_head_files()
    assert not (later / ".broker").exists()
    head = read_head(first / ".broker" / "audit.head")
    assert head is not None and head.seq == 3
