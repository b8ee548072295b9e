"""Reports per user (Art. 15(1)(c)) and per recipient (Art. 30), legal disclosures, and
the data-use policy ("we do not sell"), through real HTTP and the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime

import pytest
from sqlmodel import Session, select

from broker.cli import main
from broker.core.catalog import default_catalog
from broker.demo import sandbox_connector
from broker.runtime import build_runtime
from broker.store.models import AuditRow, Transfer
from tests.integration.conftest import Browser, Stack, connect

WORK = {"work_item": {"id": "W-1", "title": "Ship it"}}
NAMED = {**WORK, "author": {"name": "Ann"}}


def share(stack: Stack, connection_id: str, data: dict, **extra):
    with stack.api() as api:
        return api.post(
            f"/v1/connections/{connection_id}/transfers",
            json={"action": "post_message", "data": data, **extra},
        )


@pytest.fixture
def scenario(stack: Stack, browser: Browser, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """user-1 shares work items and name with the sandbox; user-2 shares work items only
    (its email was declined and is blocked); a court obtains user-1's email and phone
    by law (API), and a regulator user-1's name (CLI)."""
    one = connect(stack, browser, optional=["user.name"], user_id="user-1")
    assert share(stack, one, NAMED).status_code == 201
    assert share(stack, one, WORK).status_code == 201
    two = connect(stack, browser, optional=[], user_id="user-2")
    assert share(stack, two, WORK).status_code == 201
    assert share(stack, two, {**WORK, "to": {"email": "b@example.com"}}).status_code == 403
    with stack.api() as api:
        resp = api.post("/v1/disclosures", json={
            "user_id": "user-1", "recipient": "District Court", "legal_basis": "legal_obligation",
            "categories": ["user.contact.email", "user.contact.phone_number"],
            "reference": "Case 4-2026", "field_paths": ["email", "phone"],
        })  # fmt: skip
    assert resp.status_code == 201, resp.text
    assert resp.json()["event"] == "disclosure.legal" and resp.json()["consent_id"] is None
    for name in list(os.environ):
        if name.startswith("BROKER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BROKER_HOME", str(stack.rt.settings.home))
    monkeypatch.setenv("BROKER_DATABASE_URL", stack.rt.settings.resolved_database_url)
    assert main([
        "disclose", "--user", "user-1", "--recipient", "Data Protection Authority",
        "--categories", "user.name", "--legal-basis", "legal_obligation", "--reference", "DPA-7",
    ]) == 0  # fmt: skip
    return stack


def _recipients(report: dict) -> dict:
    return {
        (r["kind"], r["recipient"]): (r["categories"], r["flagged"]) for r in report["recipients"]
    }


def test_user_report_lists_exactly_the_recipients_and_categories(scenario: Stack) -> None:
    with scenario.api(scenario.auditor_key) as api:
        one = api.get("/v1/users/user-1/disclosures").json()
        two = api.get("/v1/users/user-2/disclosures").json()
        nobody = api.get("/v1/users/user-3/disclosures").json()
    assert _recipients(one) == {
        ("integration", "sandbox"): (["user.content.work_items", "user.name"], False),
        ("legal", "District Court"): (["user.contact.email", "user.contact.phone_number"], True),
        ("legal", "Data Protection Authority"): (["user.name"], True),
    }
    assert _recipients(two) == {("integration", "sandbox"): (["user.content.work_items"], False)}
    assert nobody["recipients"] == [] and nobody["disclosures"] == []
    sandbox = next(r for r in one["recipients"] if r["recipient"] == "sandbox")
    assert sandbox["disclosures"] == 2 and sandbox["legal_bases"] == ["consent"]
    assert sandbox["uses"] == ["functional.service"] and sandbox["privacy_policy_url"]
    assert sandbox["field_paths"] == ["author.name", "work_item.id", "work_item.title"]
    court = next(r for r in one["recipients"] if r["recipient"] == "District Court")
    assert court["legal_bases"] == ["legal_obligation"] and court["references"] == ["Case 4-2026"]
    assert court["uses"] == ["third_party_sharing.legal_obligation"]


def test_user_report_as_csv_and_html(scenario: Stack, capsys) -> None:
    with scenario.api(scenario.auditor_key) as api:
        resp = api.get("/v1/users/user-1/disclosures", params={"format": "csv"})
        page = api.get("/v1/users/user-1/disclosures", params={"format": "html"})
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(_csv_body(resp.text))))
    assert [(r["recipient"], r["flagged"]) for r in rows] == [
        ("sandbox", "no"), ("sandbox", "no"), ("District Court", "yes"),
        ("Data Protection Authority", "yes"),
    ]  # fmt: skip
    assert page.headers["content-type"].startswith("text/html")
    for text in ("Sandbox Co.", "District Court", "(disclosure required by law)", "Case 4-2026"):
        assert text in page.text
    assert main(["audit", "user", "user-2", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert _csv_body(out).count("\n") == 2 and "sandbox" in out and "Court" not in out


def _csv_body(text: str) -> str:
    """A CSV report without its ``#`` lines (generated when, by whom, from which state)."""
    return "".join(x for x in text.splitlines(keepends=True) if not x.startswith("#"))


def test_recipient_reports_flag_legal_disclosures(scenario: Stack, capsys) -> None:
    with scenario.api(scenario.auditor_key) as api:
        recipients = api.get("/v1/audit/recipients").json()["recipients"]
        records = api.get("/v1/audit/processing").json()["recipients"]
    flagged = {r["name"]: r.get("legal_disclosure", False) for r in recipients}
    assert flagged == {
        "Sandbox Co.": False,
        "Data Protection Authority": True,
        "District Court": True,
    }
    by_name = {r["name"]: r for r in records}
    sandbox = by_name["Sandbox Co."]
    assert sandbox["received_categories"] == ["user.content.work_items", "user.name"]
    assert [d["use"] for d in sandbox["declarations"]] == ["functional.service"]
    assert set(sandbox["declarations"][0]["categories"]) == {
        "user.content.work_items", "user.name", "user.contact.email",
    }  # fmt: skip
    assert by_name["District Court"]["flagged"] is True
    assert main(["audit", "report"]) == 0
    assert "LEGAL DISCLOSURE (no consent); references: Case 4-2026" in capsys.readouterr().out


def test_records_of_processing_in_fideslang_shape(scenario: Stack) -> None:
    yaml = pytest.importorskip("yaml")
    with scenario.api(scenario.auditor_key) as api:
        resp = api.get("/v1/audit/processing", params={"format": "fides"})
    doc = yaml.safe_load(resp.text)
    systems = {s["fides_key"]: s for s in doc["system"]}
    assert set(systems) == {"sandbox", "legal_District_Court", "legal_Data_Protection_Authority"}
    sandbox = systems["sandbox"]
    assert sandbox["system_type"] == "Third Party" and sandbox["privacy_policy"].endswith(
        "/privacy"
    )
    (decl,) = sandbox["privacy_declarations"]
    assert decl["data_use"] == "functional.service"
    assert decl["legal_basis_for_processing"] == "Consent"
    assert decl["data_subjects"] == ["customer"]
    court = systems["legal_District_Court"]["privacy_declarations"][0]
    assert court["data_use"] == "third_party_sharing.legal_obligation"
    assert court["legal_basis_for_processing"] == "Legal obligations"
    assert systems["legal_District_Court"]["meta"]["legal_disclosure"] == "true"


def test_legal_disclosure_requests_are_checked(stack: Stack) -> None:
    body = {"user_id": "user-1", "recipient": "Court", "legal_basis": "legal_obligation",
            "categories": ["user.name"], "reference": "R-1"}  # fmt: skip
    with stack.api(stack.auditor_key) as api:
        assert api.post("/v1/disclosures", json=body).status_code == 403
    with stack.api() as api:
        for change in ({"legal_basis": "consent"}, {"categories": ["user.nope"]},
                       {"reference": ""}, {"extra": 1}):  # fmt: skip
            resp = api.post("/v1/disclosures", json={**body, **change})
            assert resp.status_code == 422, change
    with Session(stack.rt.engine) as db:
        assert db.exec(select(AuditRow).where(AuditRow.event == "disclosure.legal")).all() == []


def test_a_transfer_for_a_forbidden_use_is_blocked_and_logged(
    stack: Stack, browser: Browser
) -> None:
    conn = connect(stack, browser, optional=["user.name"])
    resp = share(stack, conn, WORK, use="third_party_sharing.sale")
    assert resp.status_code == 403
    error = resp.json()["error"]
    assert error["code"] == "forbidden_use"
    assert error["details"]["forbidden_by"] == "third_party_sharing.sale"
    resp = share(stack, conn, WORK, use="marketing.advertising.third_party.targeted")
    assert resp.json()["error"]["details"]["forbidden_by"] == "marketing.advertising.third_party"
    assert stack.provider.received == []
    with Session(stack.rt.engine) as db:
        blocked = db.exec(select(Transfer).where(Transfer.status == "blocked")).all()
        event = db.exec(select(AuditRow).order_by(AuditRow.seq.desc())).first()
    assert [t.reason for t in blocked] == ["forbidden use", "forbidden use"]
    assert event.event == "transfer.blocked" and event.details["reason"] == "forbidden use"
    # a use the connector does not declare is refused too; an unknown key is invalid
    assert share(stack, conn, WORK, use="essential.service").json()["error"]["code"] == (
        "purpose_not_declared"
    )
    assert share(stack, conn, WORK, use="resale").status_code == 422
    assert share(stack, conn, WORK, use="functional.service").status_code == 201


def test_a_manifest_declaring_a_forbidden_use_is_refused_at_load(make_settings, tmp_path) -> None:
    sandbox = sandbox_connector(default_catalog(), "http://127.0.0.1:9")
    (tmp_path / "ads.toml").write_text(
        """
id = "adnet"
name = "Ad Network"
privacy_policy_url = "https://ads.example/privacy"
terms_url = "https://ads.example/terms"
[oauth]
authorize_url = "https://ads.example/authorize"
token_url = "https://ads.example/token"
client_id = "env:ADS_ID"
client_secret = "env:ADS_SECRET"
[[data]]
category = "user.contact.email"
purpose = "Target ads at you elsewhere"
use = "marketing.advertising.third_party.targeted"
"""
    )
    rt = build_runtime(
        make_settings(connectors_path=str(tmp_path)), builtins=[sandbox], plugins=[], upgrade=True
    )
    assert "adnet" not in rt.registry and "sandbox" in rt.registry
    (problem,) = rt.registry.problems
    assert problem.message == "declares a forbidden data use"
    assert "marketing.advertising.third_party" in problem.problems[0]
    rt.close()
    policy = tmp_path / "policy.toml"
    policy.write_text('forbidden_uses = ["functional"]\n')
    rt = build_runtime(
        make_settings(policy_file=policy), builtins=[sandbox], plugins=[], upgrade=True
    )
    assert "sandbox" not in rt.registry
    rt.close()


def _cli_json(capsys, *argv: str) -> object:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def _same_times(rows: list) -> list:
    """The rows with their times parsed (the API and the CLI print them differently)."""
    return [
        {
            k: datetime.fromisoformat(v) if k.endswith("_at") and isinstance(v, str) else v
            for k, v in r.items()
        }
        for r in rows
    ]


def test_reports_say_what_was_recorded_whatever_is_installed_now(scenario: Stack, capsys) -> None:
    """The CLI runs without the sandbox connector (it is built into the test stack only):
    its reports must still name the recipient, link its policy and list the uses the
    manifest declared when the data was sent, as the API (sandbox installed) does."""
    with scenario.api(scenario.auditor_key) as api:
        api_recipients = api.get("/v1/audit/recipients").json()["recipients"]
        api_user = api.get("/v1/users/user-1/disclosures").json()
        api_records = api.get("/v1/audit/processing").json()["recipients"]
    assert (
        "sandbox"
        not in build_runtime(
            scenario.rt.settings, builtins=[], plugins=[], upgrade=False
        ).registry.connectors
    )  # what the CLI below sees
    cli_recipients = _cli_json(capsys, "audit", "report", "--json")["recipients"]
    cli_user = _cli_json(capsys, "audit", "user", "user-1")
    cli_records = _cli_json(capsys, "audit", "records")["recipients"]

    def sandbox(rows: list, key: str = "connector") -> dict:
        (row,) = [r for r in rows if r.get(key) == "sandbox"]
        return row

    for r in (sandbox(api_recipients), sandbox(cli_recipients)):
        assert r["name"] == "Sandbox Co."
        assert r["privacy_policy_url"].endswith("/privacy") and r["terms_url"]
    assert _same_times(api_recipients) == _same_times(cli_recipients)  # the same figures
    # through both (and the console, which reads the same function)
    api_sent = [d for d in api_user["disclosures"] if d["recipient"] == "sandbox"]
    cli_sent = [d for d in cli_user["disclosures"] if d["recipient"] == "sandbox"]
    assert len(api_sent) == len(cli_sent) == 2
    for d in api_sent + cli_sent:
        assert d["recipient_name"] == "Sandbox Co."
        assert d["uses"] == ["functional.service"]  # as recorded on the transfer
        assert d["privacy_policy_url"].endswith("/privacy")
    api_sandbox = sandbox(api_records, "recipient")
    cli_sandbox = sandbox(cli_records, "recipient")
    assert api_sandbox["installed"] is True and cli_sandbox["installed"] is False
    assert cli_sandbox["name"] == "Sandbox Co."
    assert cli_sandbox["received_categories"] == api_sandbox["received_categories"]
    assert [d["use"] for d in cli_sandbox["declarations"]] == ["functional.service"]
    with Session(scenario.rt.engine) as db:
        uses = {
            tuple(t.data_uses or ()) for t in db.exec(select(Transfer)) if t.status == "delivered"
        }
    assert uses == {("functional.service",)}


def test_records_yaml_round_trips_names_yaml_would_misread() -> None:
    """PyYAML writes the scalars: a name with a colon, a quote, a leading '-' or
    'yes' and a non-ASCII letter reads back as the same string."""
    import yaml

    from broker.flows.processing_records import records_yaml

    names = ['Acme: "CRM" #1', "- yes", "yes", "Zoë & Co.", "null"]
    records = [
        {
            "kind": "consent", "recipient": f"r{i}", "name": name, "flagged": False,
            "privacy_policy_url": "https://e.example/p?a=1&b=2", "terms_url": None,
            "declarations": [{
                "purposes": [name], "use_name": "u", "categories": ["user.name"],
                "use": "essential.service", "legal_basis": "consent",
            }],
        }
        for i, name in enumerate(names)
    ]  # fmt: skip
    doc = yaml.safe_load(records_yaml(records))
    assert [s["name"] for s in doc["system"]] == names
    assert [s["privacy_declarations"][0]["name"] for s in doc["system"]] == names
    assert doc["system"][0]["privacy_policy"] == "https://e.example/p?a=1&b=2"
    assert doc["system"][0]["meta"]["legal_disclosure"] == "false"
