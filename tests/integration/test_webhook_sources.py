"""Webhooks whose events have no audit entry of their own (a refresh that failed for
good, a signed checkpoint), and webhook secrets across ``broker keys rotate``: over
real sockets to a receiver on loopback, verified with ``standardwebhooks``."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from sqlmodel import Session, select

from broker.core.errors import ProviderError
from broker.core.vault import TokenVault
from broker.flows.checkpoints import sign_checkpoint
from broker.flows.rotation import rotate_token_key
from broker.flows.tokens import refresh_access_token
from broker.flows.webhooks import WebhookSender
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.models import Connection, ConnectionToken
from broker.store.webhook_models import WebhookEndpoint
from tests.integration import test_webhooks
from tests.integration.conftest import Browser, Stack, connect
from tests.integration.test_webhooks import Manual, assert_private, deliveries, ping, register
from tests.integration.webhook_receiver import HookReceiver

hooks = test_webhooks.hooks  # the fixtures of the webhook tests, reused
manual = test_webhooks.manual


def _stale_token(stack: Stack, conn_id: str) -> str:
    with Session(stack.rt.engine) as db:
        row = db.get(ConnectionToken, conn_id)
        assert row is not None
        return stack.rt.vault.open(row.access_token, connection_id=conn_id, kind="access_token")


def _status(stack: Stack, conn_id: str) -> tuple[str, str | None]:
    with Session(stack.rt.engine) as db:
        conn = db.get(Connection, conn_id)
        assert conn is not None
        return conn.status, conn.last_error


def test_a_refresh_refused_for_good_puts_the_connection_in_error_and_tells_the_host(
    stack: Stack, browser: Browser, hooks: HookReceiver
) -> None:
    with stack.api() as api:
        endpoint = register(api, hooks.url, ["connection.error", "connection.reconsent_required"])
    conn_id = connect(stack, browser, optional=[])
    stale = _stale_token(stack, conn_id)
    # a passing failure (a 503) changes nothing and tells nobody
    stack.provider.fail_token_endpoint(503)
    with pytest.raises(ProviderError):
        refresh_access_token(stack.rt, conn_id, stale=stale)
    assert _status(stack, conn_id) == ("active", None)
    assert deliveries(stack.rt, endpoint["id"]) == []
    # the provider refuses the client itself: the connection is in error
    stack.provider.fail_token_endpoint(401, body={"error": "invalid_client"})
    with pytest.raises(ProviderError, match="invalid_client"):
        refresh_access_token(stack.rt, conn_id, stale=stale)
    status, reason = _status(stack, conn_id)
    assert status == "error" and "invalid_client" in (reason or "")
    (queued,) = deliveries(stack.rt, endpoint["id"])  # written with the status change
    assert queued.event_type == "connection.error"
    assert WebhookSender(stack.rt, owner="test").run_due() == 1
    (hook,) = hooks.wait_for(1)
    body = hook.verify(endpoint["secret"])
    assert body["type"] == "connection.error"
    assert body["data"]["connection_id"] == conn_id
    assert body["data"]["status"] == "error"
    assert body["data"]["links"]["connection"] == f"{stack.url}/v1/connections/{conn_id}"
    assert_private(hook, endpoint["secret"], stale)
    with stack.api() as api:
        shown = api.get(f"/v1/connections/{conn_id}").json()
    assert shown["status"] == "error"


def test_a_signed_checkpoint_is_announced_with_a_link_to_it(
    manual: Manual, hooks: HookReceiver
) -> None:
    with manual.api() as api:
        endpoint = register(api, hooks.url, ["checkpoint.signed"])
    with session_scope(manual.rt.engine) as session:
        for n in range(3):
            append_event(
                session,
                head_file=None,
                time=manual.clock(),
                event="connection.revoked" if n == 0 else "token.refreshed",
                actor="test",
                connection_id="conn_x",
            )
    row = sign_checkpoint(manual.rt)
    (queued,) = deliveries(manual.rt, endpoint["id"])
    assert queued.event_type == "checkpoint.signed"
    assert manual.sender().run_due() == 1
    (hook,) = hooks.wait_for(1)
    body = hook.verify(endpoint["secret"])
    assert body["type"] == "checkpoint.signed"
    data = body["data"]
    assert (data["checkpoint_id"], data["tree_size"], data["status"]) == (row.id, 3, "signed")
    link = urlsplit(data["links"]["checkpoint"])  # absolute, on the broker's base URL
    with manual.api(manual.auditor) as api:
        (shown,) = api.get(f"{link.path}?{link.query}").json()["checkpoints"]
    assert shown["id"] == row.id and shown["tree_size"] == 3
    assert row.note not in hook.body  # ids and links only


def test_keys_rotate_reseals_webhook_secrets_and_deliveries_still_verify(
    manual: Manual, hooks: HookReceiver
) -> None:
    with manual.api() as api:
        first = register(api, hooks.url)
        rotated = api.post(f"/v1/webhook-endpoints/{first['id']}/rotate-secret")
        assert rotated.status_code == 200
        other = register(api, hooks.url, ["checkpoint.signed"])
    current = rotated.json()["secret"]
    result = rotate_token_key(manual.rt, actor="test")
    assert result["resealed_webhook_endpoints"] == 2
    new = result["new_key_id"]
    with Session(manual.rt.engine) as db:
        rows = db.exec(select(WebhookEndpoint)).all()
    for row in rows:
        assert TokenVault.key_id(row.secret) == new
        if row.previous_secret:
            assert TokenVault.key_id(row.previous_secret) == new
    # the old keys are gone: only what was re-sealed can still be opened
    for kid in result["previous_key_ids"]:
        manual.rt.vault.ring.retire(kid)
    manual.rt.vault.path = None  # no reload from the key file, which still has them
    ping(manual, first["id"])
    ping(manual, other["id"])
    sender = manual.sender()
    assert sender.run_due() == 2
    signed = {h.id: h for h in hooks.wait_for(2)}
    assert len(signed) == 2
    assert {json.loads(h.body)["type"] for h in signed.values()} == {"webhook.ping"}
    by_endpoint = {d.endpoint_id: d.id for d in deliveries(manual.rt, first["id"])}
    mine = signed[by_endpoint[first["id"]]]
    mine.verify(current)
    mine.verify(first["secret"])  # the rotated-out secret, still in its 24 h
    theirs = signed[deliveries(manual.rt, other["id"])[0].id]
    theirs.verify(other["secret"])
    with pytest.raises(Exception, match="signature"):
        theirs.verify(current)
