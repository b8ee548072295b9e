"""Objection to marketing (GDPR Art. 21(2)-(3)): the API, /me, the consent page, the
gateway on real transfers through the sandbox provider, the audit log and the Art. 15
report; over real sockets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from sqlmodel import Session, select

from broker.core.connector import Connector, ConnectorSource
from broker.core.errors import InvalidInput
from broker.core.manifest import parse_manifest
from broker.demo import sandbox_manifest
from broker.flows.audit import verify_log
from broker.flows.preferences import parse_preferences
from broker.settings import Settings
from broker.store.models import AuditRow, ConsentRecord, Transfer, UserPreference
from broker.store.subjects import lookup
from tests.integration.conftest import (
    Browser,
    Stack,
    build_stack,
    connect,
    form_action,
    form_fields,
)

EMAIL = "user.contact.email"
NAME = "user.name"
AD = "marketing.advertising"
OFFER = {"work_item": {"id": "W-7", "title": "Spring offer"}, "to": {"email": "ann@example.com"}}


def marketing_connector(catalog, sandbox_url: str) -> Connector:
    """The sandbox, but it also uses the email for advertising, and calls that required."""
    raw = sandbox_manifest(sandbox_url)
    for d in raw["data"]:
        if d["category"] == EMAIL:
            d.update(use=AD, purpose="Send you offers from our partners", required=True)
    manifest = parse_manifest(raw, catalog, source="test:marketing")
    return Connector(manifest, ConnectorSource("builtin", "tests"))


@pytest.fixture
def stack(make_settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    yield from build_stack(make_settings, monkeypatch, marketing_connector)


def named(stack: Stack, user_id: str) -> str | None:
    """How the log names ``user_id`` (log format 2: their pseudonym)."""
    with stack.rt.engine.connect() as conn:
        return lookup(conn, user_id)


def share(stack: Stack, connection_id: str, **body: object):
    body = {"action": "post_message", "data": OFFER, "use": AD, **body}
    with stack.api() as api:
        return api.post(f"/v1/connections/{connection_id}/transfers", json=body)


def put_prefs(stack: Stack, user_id: str, body: object, key: str | None = None):
    with stack.api(key) as api:
        return api.put(f"/v1/users/{user_id}/preferences", json=body)


def events(stack: Stack, *names: str) -> list[AuditRow]:
    with Session(stack.rt.engine) as db:
        rows = db.exec(select(AuditRow).order_by(AuditRow.seq)).all()
    return [r for r in rows if r.event in names]


def test_an_objection_blocks_marketing_for_that_user_only_until_withdrawn(
    stack: Stack, browser: Browser
) -> None:
    objector = connect(stack, browser, optional=[NAME, EMAIL], user_id="user-1")
    other = connect(stack, browser, optional=[EMAIL], user_id="user-2")
    assert share(stack, objector).status_code == 201  # before the objection: sent
    assert len(stack.provider.received) == 1

    saved = put_prefs(stack, "user-1", {"object_to": ["marketing"]})
    assert saved.status_code == 200, saved.text
    assert saved.json()["object_to"] == ["marketing"]
    assert saved.json()["updated_at"]
    with stack.api(stack.auditor_key) as api:  # auditors read it too
        read = api.get("/v1/users/user-1/preferences").json()
    assert read["object_to"] == ["marketing"]
    assert {"use": "marketing", "name": "Marketing"} in read["objectable"]

    blocked = share(stack, objector)
    assert blocked.status_code == 403, blocked.text
    error = blocked.json()["error"]
    assert error["code"] == "user_objected"
    assert error["details"]["use"] == AD and error["details"]["objection"] == "marketing"
    # naming another use does not get the marketing category through either
    assert share(stack, objector, use="functional.service").status_code == 403
    assert len(stack.provider.received) == 1  # nothing more was sent
    with Session(stack.rt.engine) as db:
        row = db.get(Transfer, error["details"]["transfer_id"])
    assert row is not None and row.status == "blocked" and row.reason == "user objected"
    (blocked_event, *_) = [e for e in events(stack, "transfer.blocked") if e.transfer_id == row.id]
    assert blocked_event.details["reason"] == "user objected"
    assert blocked_event.details["use"] == AD and blocked_event.user_id == named(stack, "user-1")

    delivered = share(stack, other)  # another user's transfer is untouched
    assert delivered.status_code == 201 and delivered.json()["status"] == "delivered"
    assert len(stack.provider.received) == 2
    # work data alone (no marketing use) still flows for the objector
    plain = share(stack, objector, data={"work_item": {"id": "W-8"}}, use="functional.service")
    assert plain.status_code == 201, plain.text

    withdrawn = put_prefs(stack, "user-1", {"object_to": []})
    assert withdrawn.status_code == 200 and withdrawn.json()["object_to"] == []
    again = share(stack, objector)
    assert again.status_code == 201 and again.json()["status"] == "delivered"
    assert len(stack.provider.received) == 4

    objected, back = events(stack, "preference.objected", "preference.withdrawn")
    assert (objected.event, objected.outcome, objected.user_id) == (
        "preference.objected",
        "objected",
        named(stack, "user-1"),  # log format 2: the user's pseudonym
    )
    assert objected.details == {"uses": ["marketing"], "object_to": ["marketing"]}
    assert back.event == "preference.withdrawn" and back.details["uses"] == ["marketing"]
    assert back.details["object_to"] == [] and back.seq > blocked_event.seq
    # saving the same choice again records nothing new
    assert put_prefs(stack, "user-1", {"object_to": []}).status_code == 200
    assert len(events(stack, "preference.objected", "preference.withdrawn")) == 2
    assert verify_log(stack.rt).ok

    with stack.api(stack.auditor_key) as api:
        report = api.get("/v1/users/user-1/disclosures").json()
        page = api.get("/v1/users/user-1/disclosures", params={"format": "html"}).text
    assert [(o["action"], o["uses"]) for o in report["objections"]] == [
        ("objected", ["marketing"]),
        ("withdrawn", ["marketing"]),
    ]
    sent = [d["transfer_id"] for d in report["disclosures"]]
    assert row.id not in sent and again.json()["id"] in sent
    assert "Objections to uses of the data" in page and "withdrawn marketing" in page
    with stack.api(stack.auditor_key) as api:
        assert api.get("/v1/users/user-2/disclosures").json()["objections"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], None),
        ({"object_to": "marketing"}, "object_to"),
        ({"object_to": [1]}, "object_to"),
        ({"object_to": ["marketing"], "extra": True}, None),
        ({"object_to": ["functional.service"]}, "object_to"),  # not objectable here
        ({"object_to": ["marketing.nonsense"]}, "object_to"),  # not a data use
        ({"object_to": ["marketing"] * 51}, "object_to"),
    ],
)
def test_bad_preferences_are_refused_in_the_contract_shape(
    stack: Stack, body: object, field: str | None
) -> None:
    resp = put_prefs(stack, "user-1", body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_input" and error["message"]
    if field:
        assert error["details"]["field"] == field
    with Session(stack.rt.engine) as db:
        assert db.get(UserPreference, "user-1") is None
    assert events(stack, "preference.objected") == []


def test_preferences_need_the_right_role_and_a_valid_user(stack: Stack) -> None:
    body = {"object_to": ["marketing"]}
    assert put_prefs(stack, "user-1", body, key=stack.auditor_key).status_code == 403
    with stack.api("not-a-key") as api:
        assert api.get("/v1/users/user-1/preferences").status_code == 401
    bad = put_prefs(stack, "not ok", body)
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "user_id"
    with stack.api() as api:
        fresh = api.get("/v1/users/nobody/preferences").json()
        assert fresh["object_to"] == [] and fresh["updated_at"] is None
        assert "/v1/users/{user_id}/preferences" in api.get("/openapi.json").json()["paths"]


def test_the_operator_can_make_more_uses_objectable() -> None:
    rt = SimpleNamespace(settings=Settings(objectable_uses="personalize, analytics.reporting"))
    assert parse_preferences(rt, {"object_to": ["personalize", "marketing"]}) == (  # type: ignore[arg-type]
        "marketing",
        "personalize",
    )
    assert parse_preferences(rt, {"object_to": ["analytics.reporting.ad_performance"]})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        parse_preferences(rt, {"object_to": ["functional.service"]})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a known data-use key"):
        Settings(objectable_uses="marketing.bogus")


def _consent_page(stack: Stack, browser: Browser, user_id: str):
    url = stack.connect_session(user_id)["url"]
    page = browser.get(url)
    assert page.status_code == 200, page.text
    return url, page


def _approve(stack: Stack, browser: Browser, url: str, page, ticked: list[str]) -> ConsentRecord:
    data: dict[str, object] = {**form_fields(page.text), "decision": "approve"}
    data["categories"] = ticked
    to_provider = browser.post(form_action(page.text, url), data=data)
    assert to_provider.status_code == 303, to_provider.text
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    done = browser.get(back.headers["location"])
    connection_id = re.search(r"connection_id=([\w-]+)", done.headers["location"]).group(1)
    with Session(stack.rt.engine) as db:
        return db.exec(
            select(ConsentRecord).where(ConsentRecord.connection_id == connection_id)
        ).one()


def test_the_consent_page_lets_the_user_decline_a_required_marketing_use(
    stack: Stack, browser: Browser
) -> None:
    url, page = _consent_page(stack, browser, "user-5")
    assert "Marketing and promotion" in page.text
    marketing = page.text.split('id="marketing"', 1)[1]
    assert f'data-use="{AD}"' in marketing
    assert f'name="categories" value="{EMAIL}"' in marketing  # a box, though required
    assert 'value="user.content.work_items"' not in page.text  # a required non-marketing one
    record = _approve(stack, browser, url, page, ticked=[])
    assert EMAIL in record.declined_categories
    assert "user.content.work_items" in record.granted_categories


def test_an_objecting_user_is_shown_the_use_as_declined_and_cannot_grant_it(
    stack: Stack, browser: Browser
) -> None:
    assert put_prefs(stack, "user-6", {"object_to": [AD]}).status_code == 200
    url, page = _consent_page(stack, browser, "user-6")
    marketing = page.text.split('id="marketing"', 1)[1]
    assert "Declined" in marketing and "You object to marketing use" in marketing
    assert f'name="categories" value="{EMAIL}"' not in marketing
    record = _approve(stack, browser, url, page, ticked=[EMAIL, NAME])  # a forged tick
    assert EMAIL in record.declined_categories and NAME in record.granted_categories


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_me_objects_and_withdraws_with_csrf(stack: Stack, browser: Browser) -> None:
    connection_id = connect(stack, browser, optional=[EMAIL], user_id="user-7")
    with stack.api() as api:
        link = api.post("/v1/user-sessions", json={"user_id": "user-7"}).json()["url"]
    assert browser.get(link).status_code == 303
    me = browser.get(f"{stack.url}/me")
    assert "Marketing and promotion" in me.text
    assert 'name="object_to" value="marketing"' in me.text
    assert 'value="marketing" checked' not in me.text
    csrf = _csrf(me.text)

    forged = browser.post(f"{stack.url}/me/preferences", data={"object_to": "marketing"})
    assert forged.status_code in (400, 422)
    wrong = browser.post(
        f"{stack.url}/me/preferences", data={"object_to": "marketing", "csrf": "x" * 20}
    )
    assert wrong.status_code == 400
    assert events(stack, "preference.objected") == []

    saved = browser.post(
        f"{stack.url}/me/preferences", data={"object_to": "marketing", "csrf": csrf}
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == "/me?preferences=saved#preferences"
    shown = browser.get(f"{stack.url}/me?preferences=saved")
    assert "Your choice is saved" in shown.text and 'value="marketing" checked' in shown.text
    (objected,) = events(stack, "preference.objected")
    assert objected.actor == "user:" + named(stack, "user-7")
    assert objected.details["uses"] == ["marketing"]
    assert share(stack, connection_id).json()["error"]["code"] == "user_objected"

    cleared = browser.post(f"{stack.url}/me/preferences", data={"csrf": csrf})
    assert cleared.status_code == 303
    (withdrawn,) = events(stack, "preference.withdrawn")
    assert withdrawn.actor == "user:" + named(stack, "user-7")
    assert share(stack, connection_id).status_code == 201


def test_an_objection_cancels_queued_marketing_transfers_only(
    stack: Stack, browser: Browser
) -> None:
    connection_id = connect(stack, browser, optional=[EMAIL], user_id="user-8")
    stack.rt.settings.workers = 0  # nobody delivers in this process: transfers stay queued
    with stack.api() as api:
        url = f"/v1/connections/{connection_id}/transfers"
        prefer = {"Prefer": "respond-async"}
        offer = api.post(url, json={"action": "post_message", "data": OFFER}, headers=prefer)
        work = api.post(
            url,
            json={"action": "post_message", "data": {"work_item": {"id": "W-9"}}},
            headers=prefer,
        )
    assert offer.status_code == 202 and work.status_code == 202, offer.text
    assert put_prefs(stack, "user-8", {"object_to": ["marketing"]}).status_code == 200
    with Session(stack.rt.engine) as db:
        cancelled = db.get(Transfer, offer.json()["id"])
        queued = db.get(Transfer, work.json()["id"])
    assert cancelled.status == "cancelled" and cancelled.payload_sealed is None
    assert cancelled.reason == "the user objected to marketing; nothing was sent"
    assert queued.status == "pending"
    (event,) = [e for e in events(stack, "transfer.cancelled")]
    assert event.transfer_id == cancelled.id and event.user_id == named(stack, "user-8")
    assert stack.provider.received == []
    assert verify_log(stack.rt).ok
