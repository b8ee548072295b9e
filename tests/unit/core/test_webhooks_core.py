"""The webhook core: which audit events cause which messages, the retry schedule,
endpoint URL rules, signatures, and the docs' receiving example."""

from __future__ import annotations

import itertools
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from broker.core.audit_chain import EVENTS
from broker.core.webhooks import (
    EVENT_TYPES,
    MAX_RETRY_SPAN,
    RETRY_DELAYS,
    endpoint_url_problem,
    event_data,
    message_body,
    new_endpoint_secret,
    retry_delay,
    signature_header,
    webhook_events,
)

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_every_audit_event_maps_to_declared_webhook_types() -> None:
    for name in EVENTS:
        for outcome in (None, "active", "pending_confirmation"):
            assert set(webhook_events(name, outcome)) <= set(EVENT_TYPES)
    assert webhook_events("consent.granted", "active") == (
        "connection.created",
        "consent.granted",
        "connection.activated",
    )
    assert webhook_events("consent.granted", "pending_confirmation") == (
        "connection.created",
        "consent.granted",
    )
    assert webhook_events("connection.confirmed", "active") == ("connection.activated",)
    assert webhook_events("transfer.pending", None) == ()
    assert webhook_events("token.refreshed", None) == ()
    covered = {t for name in EVENTS for o in (None, "active") for t in webhook_events(name, o)}
    # what the log can cause today; the rest have no audit entry yet
    assert set(EVENT_TYPES) - covered == {
        "connection.reconsent_required",
        "connection.error",
        "checkpoint.signed",
    }


def test_retry_schedule_is_exponential_and_within_three_days() -> None:
    assert RETRY_DELAYS[:4] == (5.0, 20.0, 80.0, 320.0)
    assert all(b == min(a * 4, 86400.0) for a, b in itertools.pairwise(RETRY_DELAYS))
    assert sum(RETRY_DELAYS) <= MAX_RETRY_SPAN == 3 * 86400
    assert len(RETRY_DELAYS) == 9  # ten attempts in all
    assert retry_delay(1) == 5.0 and retry_delay(9) == 86400.0 and retry_delay(10) is None


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.example.com/in", True),
        ("http://127.0.0.1:9000/in", True),
        ("http://localhost:9000/in", True),
        ("https://8.8.8.8/in", True),
        ("http://hooks.example.com/in", False),
        ("https://10.0.0.7/in", False),
        ("https://169.254.169.254/latest", False),
        ("https://[fd00::1]/in", False),
        ("https://u:p@hooks.example.com/", False),
        ("ftp://hooks.example.com/", False),
        ("", False),
        ("https://" + "a" * 2000 + ".com/", False),
    ],
)
def test_endpoint_urls_follow_the_egress_rules(url: str, ok: bool) -> None:
    assert (endpoint_url_problem(url) is None) is ok


def test_message_is_signed_verifiably_and_carries_only_ids() -> None:
    secret, old = new_endpoint_secret(), new_endpoint_secret()
    assert secret.startswith("whsec_") and secret != old
    data = event_data(
        audit_seq=7,
        ids={"connection_id": "conn_1", "transfer_id": "tr_1", "user_id": "u"},
        categories=["user.name"],
        status="delivered",
    )
    body = message_body(
        "transfer.delivered",
        occurred_at=datetime(2026, 1, 5, tzinfo=UTC),
        data=data,
        base_url="https://broker.example.com/",
    )
    parsed = json.loads(body)
    assert parsed["timestamp"] == "2026-01-05T00:00:00.000000Z"
    assert parsed["data"]["links"]["transfer"] == "https://broker.example.com/v1/transfers/tr_1"
    assert set(parsed["data"]) == {
        "audit_seq",
        "categories",
        "connection_id",
        "links",
        "status",
        "transfer_id",
        "user_id",
    }
    now = datetime.now(UTC)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature_header(
            [secret, old], msg_id="msg_1", timestamp=now, body=body
        ),
    }
    assert Webhook(secret).verify(body, headers) == parsed
    assert Webhook(old).verify(body, headers) == parsed
    with pytest.raises(WebhookVerificationError):
        Webhook(new_endpoint_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("delivered", "failed"), headers)


def test_the_docs_receiving_example_verifies_and_dedupes(monkeypatch) -> None:
    from starlette.testclient import TestClient

    text = (DOCS / "api.md").read_text()
    section = text[text.index("### Receiving: verify the signature") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    secret = new_endpoint_secret()
    monkeypatch.setitem(os.environ, "BROKER_WEBHOOK_SECRET", secret)
    namespace: dict = {}
    exec(compile(code.group(1), "docs/api.md", "exec"), namespace)  # noqa: S102
    body = message_body(
        "connection.revoked",
        occurred_at=datetime.now(UTC),
        data=event_data(audit_seq=1, ids={"connection_id": "conn_9"}),
        base_url="https://b.example",
    )
    now = datetime.now(UTC)
    signed = {
        "webhook-id": "msg_9",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature_header([secret], msg_id="msg_9", timestamp=now, body=body),
    }
    with TestClient(namespace["app"]) as client:
        assert client.post("/hooks/broker", content=body, headers=signed).status_code == 204
        assert client.post("/hooks/broker", content=body, headers=signed).status_code == 204
        forged = {**signed, "webhook-signature": "v1,AAAA"}
        assert client.post("/hooks/broker", content=body, headers=forged).status_code == 400
    assert namespace["seen"] == {"msg_9"}
