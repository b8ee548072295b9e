"""``broker connectors new``: the package it writes passes its own tests as generated,
``[[settings]]`` included, and an id already installed is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from broker.cli import main
from broker.core.catalog import default_catalog
from broker.core.manifest import load_manifest_file

ROOT = Path(__file__).resolve().parents[2]


def test_generated_connector_passes_its_own_contract(tmp_path: Path, capsys) -> None:
    assert main(["connectors", "new", "acme-chat", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "acme-chat"
    assert f"created {root}" in capsys.readouterr().out
    manifest = load_manifest_file(root / "acme_chat" / "manifest.toml", default_catalog())
    assert manifest.id == "acme-chat"
    assert manifest.oauth.client_id == "env:ACME_CHAT_CLIENT_ID"
    (setting,) = manifest.settings
    assert (setting.name, setting.example) == ("workspace", "team-1")
    assert manifest.actions[0].url.endswith("/v1/workspaces/{workspace}/updates")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # the contract's eight, the workspace reaching the URL, four refused workspaces
    assert "13 passed" in result.stdout


@pytest.mark.parametrize("name", ["Acme", "a", "acme_chat", "9acme"])
def test_bad_names_are_refused(tmp_path: Path, name: str, capsys) -> None:
    assert main(["connectors", "new", name, "--dir", str(tmp_path)]) == 1
    assert "a connector name is lowercase" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_not_overwritten(tmp_path: Path, capsys) -> None:
    (tmp_path / "acme").mkdir()
    assert main(["connectors", "new", "acme", "--dir", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("sandbox", "builtin:broker.demo"),
        ("slack", "entry_point:scoped-broker (slack = connectors.slack.connector:"),
        ("github", "entry_point:scoped-broker"),
        ("zendesk", "entry_point:scoped-broker"),
        ("google-calendar", "entry_point:scoped-broker"),
    ],
)
def test_an_installed_connectors_id_is_refused(
    tmp_path: Path, name: str, source: str, capsys
) -> None:
    assert main(["connectors", "new", name, "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: connector id {name!r} is taken")
    assert f"already provided by {source}" in err
    assert err.rstrip().endswith("; choose another name")
    assert list(tmp_path.iterdir()) == []


def test_a_connector_directorys_id_is_refused_spelled_either_way(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    raw = (ROOT / "docs" / "connectors.md").read_text(encoding="utf-8")
    example = raw.split("```toml\n# acme-chat.toml\n", 1)[1].split("```", 1)[0]
    (shelf / "acme-chat.toml").write_text(example.replace('"acme-chat"', '"acme_chat"', 1))
    monkeypatch.setenv("BROKER_CONNECTORS_PATH", str(shelf))
    out = tmp_path / "out"
    out.mkdir()
    assert main(["connectors", "new", "acme-chat", "--dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "connector id 'acme-chat' is taken (as 'acme_chat'): already provided by file:" in err
    assert str(shelf / "acme-chat.toml") in err
    assert list(out.iterdir()) == []
