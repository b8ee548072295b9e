"""One set of conventions across the /v1 API (docs/api.md#conventions), table-tested:
cursor paging, RFC 3339 UTC times with ``Z``, ``connector_id``, ``Idempotency-Key``
with the first answer replayed, ``ETag`` / ``If-None-Match``, ``Location`` on 201."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlmodel import Session, select

from broker.flows.checkpoints import sign_checkpoint
from broker.flows.keys import create_api_key
from broker.store.audit import AuditRow
from tests.integration.conftest import RETURN_URL, Browser, Stack, connect

NAME = "user.name"
SHARE = {"action": "post_message", "data": {"work_item": {"id": "W-1", "title": "Ship it"}}}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d")


@pytest.fixture
def shared(stack: Stack, browser: Browser) -> dict[str, object]:
    """Two connections of user-1 (the first revoked), three transfers, two checkpoints."""
    first = connect(stack, browser, optional=[NAME])
    with stack.api() as api:
        for _ in range(2):
            resp = api.post(f"/v1/connections/{first}/transfers", json=SHARE)
            assert resp.status_code == 201, resp.text
        api.delete(f"/v1/connections/{first}")
    second = connect(stack, browser, optional=[NAME])
    with stack.api() as api:
        assert api.post(f"/v1/connections/{second}/transfers", json=SHARE).status_code == 201
    sign_checkpoint(stack.rt)
    sign_checkpoint(stack.rt)
    return {"connections": [second, first]}


# (path, items key, id field): every list pages the same way
LISTS = [
    ("/v1/transfers", "transfers", "id"),
    ("/v1/users/user-1/connections", "connections", "id"),
    ("/v1/audit/log", "entries", "seq"),
    ("/v1/audit/checkpoints", "checkpoints", "id"),
]


@pytest.mark.parametrize(("path", "items", "field"), LISTS)
def test_every_list_pages_with_limit_cursor_and_next_cursor(
    stack: Stack, shared: dict, path: str, items: str, field: str
) -> None:
    with stack.api(stack.auditor_key) as api:
        everything = [x[field] for x in api.get(path, params={"limit": 500}).json()[items]]
        walked, cursor, pages = [], None, 0
        while True:
            params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
            body = api.get(path, params=params).json()
            walked += [x[field] for x in body[items]]
            cursor, pages = body["next_cursor"], pages + 1
            assert cursor is None or isinstance(cursor, str)
            if cursor is None:
                break
        bad = api.get(path, params={"cursor": "not-a-cursor"})
    assert len(everything) >= 2
    assert walked == everything and pages >= len(everything)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize(
    ("path", "items", "old_param", "old_field"),
    [
        ("/v1/audit/log", "entries", "after", "next_after"),
        ("/v1/audit/checkpoints", "checkpoints", "after_id", "next_after_id"),
    ],
)
def test_old_paging_parameters_still_work(
    stack: Stack, shared: dict, path: str, items: str, old_param: str, old_field: str
) -> None:
    with stack.api(stack.auditor_key) as api:
        first = api.get(path, params={"limit": 1}).json()
        old = api.get(path, params={"limit": 1, old_param: first[old_field]}).json()
        new = api.get(path, params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert first["next_cursor"] == str(first[old_field])
    assert old[items] == new[items] != first[items]


def _times(value: object, where: str = "") -> list[tuple[str, str]]:
    """Every string in a JSON value that looks like a time, with where it was."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _times(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in _times(v, f"{where}[{i}]")]
    return [(where, value)] if isinstance(value, str) and TIME.match(value) else []


def test_every_time_in_every_answer_is_rfc3339_utc_with_z(stack: Stack, shared: dict) -> None:
    second = shared["connections"][0]
    with stack.api() as api:
        sent = api.post(f"/v1/connections/{second}/transfers", json=SHARE)
        session = api.post("/v1/connect-sessions", json={"user_id": "user-2"})
        webhook = api.post(
            "/v1/webhook-endpoints",
            json={"url": "https://example.com/hooks", "events": ["policy.changed"]},
        )
        gets = [
            api.get(p)
            for p in (
                "/v1/transfers",
                f"/v1/transfers/{sent.json()['id']}",
                "/v1/users/user-1/connections",
                f"/v1/connections/{second}",
                f"/v1/connections/{second}/consents",
                "/v1/audit/verify",
                "/v1/audit/recipients",
                "/v1/audit/log",
                "/v1/audit/checkpoints",
                "/v1/audit/public-key",
                "/v1/audit/processing",
                "/v1/users/user-1/disclosures",
                "/v1/webhook-endpoints",
            )
        ]
    found = []
    for resp in (sent, session, webhook, *gets):
        assert resp.status_code in (200, 201), (resp.url, resp.text)
        found += [(f"{resp.url.path}{where}", t) for where, t in _times(resp.json())]
    assert len(found) > 30
    wrong = [(where, t) for where, t in found if not t.endswith("Z")]
    assert wrong == [], "\n".join(map(str, wrong))
    for _, text in found:
        assert datetime.fromisoformat(text).utcoffset() == timedelta(0)


def test_connector_id_everywhere_with_the_old_name_kept(stack: Stack, shared: dict) -> None:
    second = shared["connections"][0]
    with stack.api() as api:
        conn = api.get(f"/v1/connections/{second}").json()
        consent = api.get(f"/v1/connections/{second}/consents").json()["consents"][0]
        sent = api.post(f"/v1/connections/{second}/transfers", json=SHARE).json()
        listed = api.get(f"/v1/transfers/{sent['id']}").json()
        by_new = api.get("/v1/transfers", params={"connector_id": "sandbox"}).json()
        by_old = api.get("/v1/transfers", params={"connector": "sandbox"}).json()
        none = api.get("/v1/transfers", params={"connector_id": "nobody"}).json()
        session = api.post(
            "/v1/connect-sessions",
            json={"user_id": "user-3", "connector_id": "sandbox", "return_url": RETURN_URL},
        )
    for body in (conn, consent, sent, listed):
        assert body["connector_id"] == body["connector"] == "sandbox"
    assert by_new["transfers"] == by_old["transfers"] and len(by_new["transfers"]) == 4
    assert none["transfers"] == []
    assert session.status_code == 201 and "/connect/sandbox?" in session.json()["url"]


# (path, body): POSTs that create something; each replays its first answer
CREATES = [
    ("/v1/connect-sessions", {"user_id": "user-9", "connector_id": "sandbox"}, {"user_id": "x"}),
    ("/v1/user-sessions", {"user_id": "user-9"}, {"user_id": "user-8"}),
    (
        "/v1/disclosures",
        {
            "user_id": "user-9",
            "recipient": "Tax authority",
            "categories": [NAME],
            "legal_basis": "legal_obligation",
            "reference": "order 1",
        },
        {"user_id": "user-9"},
    ),
    (
        "/v1/webhook-endpoints",
        {"url": "https://example.com/hooks", "events": ["policy.changed"]},
        {"url": "https://example.com/other", "events": ["policy.changed"]},
    ),
]


def _audit_count(stack: Stack) -> int:
    with Session(stack.rt.engine) as db:
        return len(db.exec(select(AuditRow)).all())


@pytest.mark.parametrize(("path", "body", "other"), CREATES)
def test_idempotency_key_replays_the_first_answer(
    stack: Stack, path: str, body: dict, other: dict
) -> None:
    headers = {"Idempotency-Key": f"key-{path}"}
    with stack.api() as api:
        first = api.post(path, json=body, headers=headers)
        events = _audit_count(stack)
        again = api.post(path, json=dict(reversed(body.items())), headers=headers)
        events_after = _audit_count(stack)
        changed = api.post(path, json=other, headers=headers)
        fresh = api.post(path, json=body, headers={"Idempotency-Key": f"new-{path}"})
    _, second_admin = create_api_key(stack.rt.engine, role="admin")
    with stack.api(second_admin) as api:
        someone_else = api.post(path, json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()  # the same answer, not a second resource
    assert again.headers.get("location") == first.headers.get("location")
    assert events_after == events  # nothing done twice
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    assert fresh.status_code == 201 and fresh.json() != first.json()
    assert someone_else.status_code == 201 and someone_else.json() != first.json()


def test_refusals_are_kept_and_bad_keys_refused(stack: Stack) -> None:
    """A 4xx answer is the answer to that request: replayed too; a 401 is not kept."""
    body = {"user_id": "user-9", "connector_id": "no-such-connector"}
    headers = {"Idempotency-Key": "k-404"}
    with stack.api() as api:
        first = api.post("/v1/connect-sessions", json=body, headers=headers)
        again = api.post("/v1/connect-sessions", json=body, headers=headers)
        bad = api.post("/v1/connect-sessions", json=body, headers={"Idempotency-Key": "a b"})
    with stack.api("brk_wrong") as api:
        unauthenticated = api.post("/v1/connect-sessions", json=body, headers=headers)
    assert first.status_code == again.status_code == 404
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "Idempotency-Key"
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize("path", ["/v1/catalog", "/v1/connectors", "/v1/connectors/sandbox"])
def test_etag_and_if_none_match(stack: Stack, path: str) -> None:
    with stack.api(stack.auditor_key) as api:
        first = api.get(path)
        tag = first.headers["etag"]
        same = api.get(path, headers={"If-None-Match": tag})
        weak = api.get(path, headers={"If-None-Match": f'"other", W/{tag}'})
        stale = api.get(path, headers={"If-None-Match": '"stale"'})
    assert first.status_code == 200 and re.fullmatch(r'"[0-9a-f]{32}"', tag)
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == tag
    assert weak.status_code == 304
    assert stale.status_code == 200 and stale.json() == first.json()
    assert stale.headers["etag"] == tag  # the same body, the same tag


def test_location_on_every_201(stack: Stack, browser: Browser) -> None:
    connection = connect(stack, browser, optional=[NAME])
    with stack.api() as api:
        answers = {
            "session": api.post("/v1/connect-sessions", json={"user_id": "u-1"}),
            "me": api.post("/v1/user-sessions", json={"user_id": "u-1"}),
            "transfer": api.post(f"/v1/connections/{connection}/transfers", json=SHARE),
            "disclosure": api.post("/v1/disclosures", json=CREATES[2][1]),
            "webhook": api.post("/v1/webhook-endpoints", json=CREATES[3][1]),
        }
    for name, resp in answers.items():
        assert resp.status_code == 201, (name, resp.text)
        assert resp.headers.get("location"), name
    assert answers["session"].headers["location"] == answers["session"].json()["url"]
    assert answers["transfer"].headers["location"].endswith(answers["transfer"].json()["id"])
    assert answers["disclosure"].headers["location"] == "/v1/users/user-9/disclosures"


def test_the_migration_creates_what_the_idempotency_model_declares(stack: Stack) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with stack.rt.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(ctx, SQLModel.metadata) if "idempotency" in repr(d)]
    assert diffs == []
