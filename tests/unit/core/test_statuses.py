"""Connection and transfer statuses and revocation outcomes (broker.core.statuses): the
members round-trip through JSON and the audit encoding as their plain strings, the derived
sets are what the docs say, and the docs list exactly the members."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import get_args

import pytest

from broker.core.audit_chain import GENESIS_HASH, canonical_bytes, seal
from broker.core.statuses import (
    DISCLOSED_TRANSFER_STATUSES,
    FINAL_TRANSFER_STATUSES,
    LIVE_CONNECTION_STATUSES,
    ConnectionStatus,
    RevocationOutcome,
    TokenRevocation,
    TransferStatus,
    revocation_failed,
)

DOCS = Path(__file__).resolve().parents[3] / "docs"
ENUMS: list[type[StrEnum]] = [
    ConnectionStatus,
    TransferStatus,
    RevocationOutcome,
    TokenRevocation,
]


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.__name__)
def test_members_round_trip_as_their_strings(enum: type[StrEnum]) -> None:
    for member in enum:
        assert member == member.value and str(member) == member.value
        text = json.dumps({"status": member})
        assert text == json.dumps({"status": member.value})
        assert enum(json.loads(text)["status"]) is member


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.__name__)
def test_the_audit_encoding_of_a_member_is_that_of_its_string(enum: type[StrEnum]) -> None:
    for member in enum:
        plain = {"outcome": member.value, "details": {member.value: [member.value]}}
        typed = {"outcome": member, "details": {member: [member]}}
        assert canonical_bytes(typed) == canonical_bytes(plain)
        fields = {
            "seq": 1,
            "time": "2026-01-01T00:00:00.000000Z",
            "event": "connection.revoked",
            "actor": "t",
        }
        a = seal({**fields, "outcome": member, "details": {"s": member}}, GENESIS_HASH)
        b = seal({**fields, "outcome": member.value, "details": {"s": member.value}}, GENESIS_HASH)
        assert a.hash == b.hash and a.canonical() == b.canonical()
        assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())


def test_the_derived_sets() -> None:
    assert set(FINAL_TRANSFER_STATUSES) == set(TransferStatus) - {TransferStatus.PENDING}
    assert set(DISCLOSED_TRANSFER_STATUSES) == {"delivered", "outcome_unknown"}
    assert set(LIVE_CONNECTION_STATUSES) == {
        "active",
        "pending_confirmation",
        "reconsent_required",
        "error",
    }


def test_a_failure_is_any_result_that_starts_with_failed() -> None:
    assert TokenRevocation.FAILED.because("HTTP 500") == "failed: HTTP 500"
    assert revocation_failed({"refresh_token": "revoked", "access_token": "failed: HTTP 500"})
    assert not revocation_failed({"access_token": "already invalid", "provider": "not attempted"})


def _section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    end = text.find("\n#", start + len(heading))
    return text[start : end if end >= 0 else None]


def _table_rows(section: str) -> list[list[str]]:
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row] for row in rows]


def _outside_parentheses(text: str) -> str:
    out, depth = [], 0
    for ch in text:
        depth += ch == "("
        if depth == 0:
            out.append(ch)
        depth -= ch == ")" and depth > 0
    return "".join(out)


def test_api_md_lists_exactly_the_transfer_statuses_and_which_are_final() -> None:
    rows = _table_rows(_section((DOCS / "api.md").read_text(), "### Transfer statuses"))
    documented = {row[0].strip("`"): row[1] for row in rows}
    assert set(documented) == set(TransferStatus)
    assert {s for s, final in documented.items() if final == "yes"} == set(FINAL_TRANSFER_STATUSES)


def test_auditors_md_lists_exactly_the_transfer_statuses() -> None:
    rows = _table_rows(_section((DOCS / "auditors.md").read_text(), "## Transfers"))
    assert {row[0].strip("`") for row in rows} == set(TransferStatus)


def test_api_md_lists_exactly_the_connection_statuses() -> None:
    text = (DOCS / "api.md").read_text()
    start = text.index("`status`: `pending` (")
    prose = text[start + len("`status`:") : text.index("Tokens are", start)]
    assert set(re.findall(r"`([a-z_]+)`", _outside_parentheses(prose))) == set(ConnectionStatus)


def test_operations_md_lists_exactly_the_connection_statuses() -> None:
    text = (DOCS / "operations.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `connections` |"))
    listed = row[row.index("status (") : row.index(")", row.index("status ("))]
    assert set(re.findall(r"`([a-z_]+)`", listed)) == set(ConnectionStatus)


def test_auditors_md_lists_the_revocation_outcomes() -> None:
    text = (DOCS / "auditors.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `connection.revoked` |"))
    outcome = row.strip("|").split(" | ")[2]
    assert set(re.findall(r"`([a-z_]+)`", outcome)) == set(RevocationOutcome)


def test_the_transfer_schema_offers_exactly_the_transfer_statuses() -> None:
    from broker.web.api.schemas import Transfer

    status = Transfer.model_fields["status"].annotation
    assert set(get_args(status)) == set(TransferStatus)
