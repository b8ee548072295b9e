"""``broker catalog list`` shows the catalog in force (the default or the operator's
``BROKER_CATALOG``), and a manifest's unknown category names the key it most likely meant."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from broker.cli import main
from broker.core.catalog import default_catalog
from tests.integration.test_cli import GOOD_MANIFEST

DEFAULT = Path(__file__).resolve().parents[2] / "broker" / "core" / "data" / "catalog.toml"


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("BROKER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BROKER_HOME", str(tmp_path / "home"))
    return tmp_path


def test_lists_every_category_under_its_heading_with_its_title(clean_env, capsys) -> None:
    assert main(["catalog", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    catalog = default_catalog()
    listed = [line.split()[0] for line in lines if line.startswith("  ")]
    assert listed == [c.key for _, cats in catalog.by_heading() for c in cats]
    email = next(line for line in lines if line.split()[0] == "user.contact.email")
    assert "Email address" in email and email.rstrip().endswith("medium")
    # each category follows its heading's title
    assert lines.index("Account information (account)") < lines.index(email)
    assert lines.index(email) < lines.index("Application data (application)")


def test_json_is_the_catalog_document(clean_env, capsys) -> None:
    assert main(["catalog", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == default_catalog().to_dict()


def test_lists_the_operators_catalog(clean_env, monkeypatch, capsys) -> None:
    custom = clean_env / "catalog.toml"
    custom.write_text(
        DEFAULT.read_text(encoding="utf-8").replace(
            'title = "Email address"', 'title = "Work email"'
        ),
        encoding="utf-8",
    )
    monkeypatch.setenv("BROKER_CATALOG", str(custom))
    assert main(["catalog", "list"]) == 0
    out = capsys.readouterr().out
    assert "Work email" in out and "Email address" not in out


def test_unknown_category_suggests_the_key_it_meant(clean_env, capsys) -> None:
    typo = clean_env / "typo.toml"
    typo.write_text(GOOD_MANIFEST.replace("user.content.work_items", "user.contact.emial"))
    assert main(["connectors", "check", str(typo)]) == 1
    err = capsys.readouterr().err
    assert (
        "data[0].category: 'user.contact.emial' is not in the catalog; "
        "did you mean 'user.contact.email'?"
    ) in err
