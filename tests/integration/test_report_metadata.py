"""Reports people can open and check (issue 13 point 6, issue 11 point 7): every
report, in every format and through the API and the CLI, says when it was generated,
by which controller and from which log state; the Art. 15 report has its (a)-(h)
sections with human titles, and says under which terms version each category was sent."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from sqlmodel import Session, select

from broker.cli import main
from broker.flows.checkpoints import sign_checkpoint
from broker.store.models import ConsentRecord, Transfer
from tests.integration.conftest import Stack
from tests.integration.test_reports import _csv_body, scenario  # noqa: F401 (a fixture)


def _comments(text: str) -> dict[str, str]:
    return dict(x[2:].split(": ", 1) for x in text.splitlines() if x.startswith("# "))


def _cli(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.fixture
def pinned(scenario: Stack):  # noqa: F811
    """The scenario with a checkpoint signed: reports name its size and root."""
    return scenario, sign_checkpoint(scenario.rt)


def _assert_meta(meta: dict, checkpoint) -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["generated_at"])
    assert "controller" in meta
    assert meta["checkpoint"]["tree_size"] == checkpoint.tree_size
    assert meta["checkpoint"]["root_hash"] == checkpoint.root_hash
    assert meta["head"]["seq"] >= checkpoint.tree_size


def test_every_json_report_carries_its_metadata(pinned, capsys) -> None:
    stack, checkpoint = pinned
    with stack.api(stack.auditor_key) as api:
        for path in (
            "/v1/audit/recipients",
            "/v1/audit/processing",
            "/v1/users/user-1/disclosures",
        ):
            _assert_meta(api.get(path).json()["report"], checkpoint)
    for argv in (("audit", "report", "--json"), ("audit", "records"), ("audit", "user", "user-1")):
        _assert_meta(json.loads(_cli(capsys, *argv))["report"], checkpoint)


def test_csv_yaml_html_and_text_reports_carry_it_too(pinned, capsys) -> None:
    stack, checkpoint = pinned
    with stack.api(stack.auditor_key) as api:
        csv_text = api.get("/v1/users/user-1/disclosures", params={"format": "csv"}).text
        yaml_text = api.get("/v1/audit/processing", params={"format": "fides"}).text
        html = api.get("/v1/users/user-1/disclosures", params={"format": "html"}).text
    outputs = {
        "api csv": csv_text,
        "api yaml": yaml_text,
        "cli csv": _cli(capsys, "audit", "user", "user-1", "--format", "csv"),
        "cli yaml": _cli(capsys, "audit", "records", "--format", "fides"),
        "cli text": _cli(capsys, "audit", "report"),
    }
    for name, text in outputs.items():
        head = _comments(text)
        assert head["log_checkpoint_tree_size"] == str(checkpoint.tree_size), name
        assert head["log_checkpoint_root_hash"] == checkpoint.root_hash, name
        assert head["generated_at"].endswith("Z") and "controller" in head, name
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(yaml_text)["system"]  # the comments keep it valid YAML
    assert f"signed checkpoint of {checkpoint.tree_size}" in html
    assert checkpoint.root_hash in html and "Generated 20" in html
    assert "@media print" in html


def test_csv_lists_are_semicolon_cells_with_titles_beside_keys(scenario: Stack) -> None:  # noqa: F811
    with scenario.api(scenario.auditor_key) as api:
        text = api.get("/v1/users/user-1/disclosures", params={"format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(_csv_body(text))))
    named = next(r for r in rows if r["field_paths"].count(";"))
    assert named["categories"] == "user.content.work_items; user.name"
    assert named["category_titles"] == "Work items; Name"
    assert named["terms_version"] and not named["categories"].startswith("[")
    court = next(r for r in rows if r["recipient"] == "District Court")
    assert court["categories"] == "user.contact.email; user.contact.phone_number"


def test_the_art15_report_has_its_sections(scenario: Stack) -> None:  # noqa: F811
    with scenario.api(scenario.auditor_key) as api:
        report = api.get("/v1/users/user-1/disclosures").json()
        html = api.get("/v1/users/user-1/disclosures", params={"format": "html"}).text
    a = report["art15"]
    assert {p["purpose"] for p in a["purposes"]}  # (a)
    titles = {c["category"]: c["title"] for c in a["categories"]}  # (b)
    assert titles["user.name"] == "Name" and titles["user.content.work_items"] == "Work items"
    assert [r["name"] for r in a["retention"]] == ["Sandbox Co."]  # (d)
    assert {r["right"] for r in a["rights"]} >= {"withdraw", "object", "complain"}  # (e)-(f)
    assert a["source"] and a["automated_decisions"].startswith("none")  # (g)-(h)
    for part in ("(a)", "(b)", "(c)", "(d)", "(e)-(f)", "(g)-(h)"):
        assert f"Art. 15(1){part}" in html
    assert '<td>Name</td><td class="key"><code>user.name</code></td>' in html
    assert "Complain to a supervisory authority" in html and "Withdraw your consent" in html


def test_reports_say_which_terms_version_each_category_was_sent_under(
    scenario: Stack,  # noqa: F811
) -> None:
    with Session(scenario.rt.engine) as db:
        sent = [t for t in db.exec(select(Transfer)) if t.status == "delivered"]
        consents = {c.id: c for c in db.exec(select(ConsentRecord))}
    versions = {t.terms_version for t in sent if t.user_id == "user-1"}
    assert versions and None not in versions
    with scenario.api(scenario.auditor_key) as api:
        report = api.get("/v1/users/user-1/disclosures").json()
        html = api.get("/v1/users/user-1/disclosures", params={"format": "html"}).text
        records = api.get("/v1/audit/processing").json()["recipients"]
    rows = [r for r in report["art15"]["sent_under"] if r["recipient"] == "sandbox"]
    assert {r["category"] for r in rows} == {"user.content.work_items", "user.name"}
    assert {r["terms_version"] for r in rows} == versions
    consent = consents[sent[0].consent_id]
    assert all(r["policy_digests"] == (consent.policy_digests or {}) for r in rows)
    for v in versions:
        assert v in html
    legal = [r for r in report["art15"]["sent_under"] if r["kind"] == "legal"]
    assert legal and all(r["terms_version"] is None for r in legal)
    # per recipient (records of processing): each terms version its data was sent under
    (sandbox,) = [r for r in records if r["recipient"] == "sandbox"]
    every = {t.terms_version for t in sent}
    assert {t["terms_version"] for t in sandbox["terms"]} == every
    assert sum(sum(t["category_transfers"].values()) for t in sandbox["terms"]) >= len(sent)
