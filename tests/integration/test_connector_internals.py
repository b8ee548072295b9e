"""A connector's exception text never reaches what the broker records or shows: the
transfer row, the connection's ``last_error``, the API's answer and the audit log get a
reason code and the exception's type; the text goes to the operator log only."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from broker.core.catalog import default_catalog
from broker.core.connector import BoundAction, Connector
from broker.core.manifest import parse_manifest
from broker.demo import sandbox_manifest
from broker.flows.keys import create_api_key
from broker.store.models import AuditRow, Connection, Transfer
from broker.testing import BrokerHarness, FakeProvider
from broker.web.app import create_app

SECRET = "secret-internal-detail"
RECORDED = "connector_error (KeyError)"
WORK = {"work_item": {"id": "W-1", "title": "Ship it"}}


class Leaky(Connector):
    """Every hook raises a builtin exception whose text must stay internal."""

    refuse_connect: ClassVar[bool] = False

    def check_connection(self, client: httpx.Client, settings: Mapping[str, str]) -> None:
        if Leaky.refuse_connect:
            raise KeyError(SECRET)

    def deliver(self, action: BoundAction, payload: dict[str, Any], client: httpx.Client) -> None:
        raise KeyError(SECRET)

    def before_revoke(self, client: httpx.Client, settings: Mapping[str, str]) -> None:
        raise KeyError(SECRET)


@pytest.fixture
def broker(database_url: str) -> Iterator[tuple[BrokerHarness, TestClient, dict[str, str]]]:
    Leaky.refuse_connect = False
    leaky = Leaky(
        parse_manifest(
            sandbox_manifest("https://leaky.example.com"), default_catalog(), source="test"
        )
    )
    with BrokerHarness(leaky, FakeProvider(leaky.manifest), database_url=database_url) as h:
        _, key = create_api_key(h.rt.engine, role="admin")
        with TestClient(create_app(h.rt)) as client:
            yield h, client, {"Authorization": f"Bearer {key}"}
    Leaky.refuse_connect = False


def _audit_text(h: BrokerHarness) -> str:
    with Session(h.rt.engine) as session:
        rows = session.exec(select(AuditRow).order_by(AuditRow.seq)).all()  # type: ignore[arg-type]
    return json.dumps([r.model_dump() for r in rows], default=str)


def test_a_raising_deliver_hook_records_the_type_not_the_text(
    broker, caplog: pytest.LogCaptureFixture
) -> None:
    h, client, auth = broker
    caplog.set_level(logging.WARNING, logger="broker.connectors")
    connection = h.connect()
    resp = client.post(
        f"/v1/connections/{connection}/transfers",
        json={"action": "post_message", "data": WORK},
        headers=auth,
    )
    assert resp.status_code == 502
    transfer = resp.json()["error"]["details"]["transfer"]
    assert transfer["status"] == "failed" and transfer["reason"] == RECORDED
    assert SECRET not in resp.text
    listed = client.get(f"/v1/transfers/{transfer['id']}", headers=auth)
    assert listed.status_code == 200 and listed.json()["reason"] == RECORDED
    assert SECRET not in listed.text
    with Session(h.rt.engine) as session:
        row = session.get(Transfer, transfer["id"])
    assert row is not None and row.reason == RECORDED
    assert SECRET not in json.dumps(row.model_dump(), default=str)
    log_text = _audit_text(h)
    assert RECORDED in log_text, "the failed entry carries the code and the type"
    assert SECRET not in log_text
    assert SECRET in caplog.text, "the operator log has the text"
    assert all(r.levelno == logging.WARNING for r in caplog.records if SECRET in r.getMessage())


def test_a_raising_before_revoke_hook_records_the_type_not_the_text(broker) -> None:
    h, client, auth = broker
    connection = h.connect()
    resp = client.delete(f"/v1/connections/{connection}", headers=auth)
    assert resp.status_code == 200, resp.text
    assert SECRET not in resp.text
    assert f"failed: {RECORDED}" in resp.text
    log_text = _audit_text(h)
    assert f"failed: {RECORDED}" in log_text
    assert SECRET not in log_text


def test_a_raising_check_connection_hook_records_the_type_not_the_text(broker) -> None:
    h, client, auth = broker
    Leaky.refuse_connect = True
    with pytest.raises(AssertionError) as refused:
        h.connect()
    shown = str(refused.value)  # what the callback page tells the user
    assert RECORDED in shown and SECRET not in shown
    with Session(h.rt.engine) as session:
        conn = session.exec(select(Connection)).one()
    assert conn.status == "pending"
    assert conn.last_error == f"connection check failed: {RECORDED}"
    answer = client.get(f"/v1/connections/{conn.id}", headers=auth)
    assert answer.status_code == 200
    assert answer.json()["last_error"] == conn.last_error and SECRET not in answer.text
    assert SECRET not in _audit_text(h)  # (a refused connection writes no entry today)
