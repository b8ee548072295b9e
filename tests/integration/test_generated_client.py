"""A client generated from the served /openapi.json by a real generator
(openapi-python-client) drives the connect-and-share flow against a broker on loopback:
the document is complete enough for a host to build on without reading the source."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.integration.conftest import RETURN_URL, Browser, Stack, approve_link

PACKAGE = "generated_broker_client"
NAME = "user.name"


@pytest.fixture
def client_package(stack: Stack, tmp_path: Path) -> Iterator[ModuleType]:
    """The generated package, from the document the running broker serves."""
    spec = tmp_path / "openapi.json"
    spec.write_bytes(httpx.get(f"{stack.url}/openapi.json", timeout=10).raise_for_status().content)
    out = tmp_path / "client"
    run = subprocess.run(  # noqa: S603 (our interpreter, our arguments)
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec),
         "--meta", "none", "--output-path", str(out / PACKAGE)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Warning" not in run.stdout, run.stdout  # every schema understood
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def _api(name: str) -> ModuleType:
    group, op = name.split(".")
    return importlib.import_module(f"{PACKAGE}.api.{group}.{op}")


def _models() -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.models")


def test_generated_client_connects_shares_and_revokes(
    stack: Stack, browser: Browser, client_package: ModuleType
) -> None:
    m = _models()
    admin = client_package.AuthenticatedClient(base_url=stack.url, token=stack.admin_key)
    auditor = client_package.AuthenticatedClient(base_url=stack.url, token=stack.auditor_key)

    body = m.ConnectSessionCreate(user_id="user-1", connector_id="sandbox", return_url=RETURN_URL)
    issued = _api("connect.create_connect_session").sync(client=admin, body=body)
    assert isinstance(issued, m.ConnectSessionIssued)
    assert issued.expires_at.utcoffset() == timedelta(0)  # RFC 3339 with Z, parsed as UTC
    connection_id = approve_link(browser, issued.url, optional=[NAME])

    page = _api("connections.list_user_connections").sync("user-1", client=auditor)
    assert isinstance(page, m.ConnectionPage)
    assert [c.id for c in page.connections] == [connection_id]
    conn = _api("connections.get_connection").sync(connection_id, client=auditor)
    assert (conn.status, conn.connector_id) == ("active", "sandbox")
    assert NAME in conn.granted_categories

    share = m.TransferCreate.from_dict(
        {"action": "post_message", "data": {"work_item": {"id": "W-1", "title": "Ship it"}}}
    )
    create = _api("transfers.create_transfer")
    sent = create.sync_detailed(connection_id, client=admin, body=share, idempotency_key="k-1")
    assert sent.status_code == 201
    assert isinstance(sent.parsed, m.Transfer)
    transfer = sent.parsed
    assert transfer.status == m.TransferStatus.DELIVERED
    assert transfer.connector_id == "sandbox"
    assert transfer.created_at.utcoffset() == timedelta(0)
    assert transfer.attempts[0].status == 201
    assert stack.provider.received  # it reached the third party

    again = create.sync_detailed(connection_id, client=admin, body=share, idempotency_key="k-1")
    assert again.status_code == 200 and again.parsed.id == transfer.id  # replayed
    assert len(stack.provider.received) == 1

    got = _api("transfers.get_transfer").sync(transfer.id, client=auditor)
    assert got.id == transfer.id and got.status == m.TransferStatus.DELIVERED
    listed = _api("transfers.list_transfers").sync(client=auditor, connector_id="sandbox")
    assert [t.id for t in listed.transfers] == [transfer.id] and listed.next_cursor is None

    revoked = _api("connections.revoke_connection").sync(connection_id, client=admin)
    assert isinstance(revoked, m.Revocation)
    assert revoked.connection.status == "revoked" and revoked.already_revoked is False

    refused = create.sync_detailed(connection_id, client=admin, body=share)
    assert refused.status_code == 409
    assert isinstance(refused.parsed, m.ErrorBody)  # the broker's error shape, typed
    assert refused.parsed.error.code == "connection_not_active"


def test_generated_client_reads_errors_and_the_catalog(
    stack: Stack, client_package: ModuleType
) -> None:
    m = _models()
    nobody = client_package.Client(base_url=stack.url)
    denied = _api("catalog.get_catalog").sync_detailed(client=nobody)
    assert denied.status_code == 401
    assert isinstance(denied.parsed, m.ErrorBody) and denied.parsed.error.code == "unauthenticated"

    auditor = client_package.AuthenticatedClient(base_url=stack.url, token=stack.auditor_key)
    catalog = _api("catalog.get_catalog").sync(client=auditor)
    assert isinstance(catalog, m.Catalog)
    keys = {c.key for h in catalog.headings for c in h.categories}
    assert NAME in keys
    forbidden = _api("connect.create_connect_session").sync_detailed(
        client=auditor, body=m.ConnectSessionCreate(user_id="user-1")
    )
    assert forbidden.status_code == 403 and forbidden.parsed.error.code == "forbidden"
    bad = _api("transfers.list_transfers").sync_detailed(client=auditor, limit=501)
    assert bad.status_code == 422 and bad.parsed.error.code == "invalid_input"
