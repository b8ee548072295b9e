"""Telling the user about changed terms and agreeing again in one step (issue 11), and
reconnecting instead of duplicating (issue 12), over real sockets: the sandbox changes
its policy text, the check pauses the connection, ``/me`` shows the notice and the
diff, and a re-consent or a reconnect keeps the connection's id."""

from __future__ import annotations

import copy
import re

from sqlmodel import Session, col, select

from broker.core.catalog import default_catalog
from broker.core.connector import Connector, ConnectorSource
from broker.core.manifest import parse_manifest
from broker.demo import sandbox_manifest
from broker.flows.audit import verify_log
from broker.flows.policy_checks import check_policies
from broker.flows.terms import current_terms_version, record_terms
from broker.store.models import AuditRow, Connection, ConnectionToken, ConsentRecord, Transfer
from broker.store.policy_models import PolicyChange
from broker.store.webhook_models import WebhookDelivery
from tests.integration.conftest import Browser, Stack, connect, form_fields, query
from tests.integration.test_me_pages import share, sign_in

NAME, EMAIL = "user.name", "user.contact.email"
WORK = {"work_item": {"id": "W-1", "title": "Ship it"}}  # required data only
POLICY = "".join(f"<p>Clause {i}: nothing here is shared with anyone else.</p>" for i in range(20))
SOLD = POLICY.replace(
    "Clause 3: nothing here is shared with anyone else.",
    "Clause 3: everything is sold to data brokers. We may run &lt;script&gt;x()&lt;/script&gt;.",
).replace("Clause 4: nothing here is shared", "Clause 4: all of it is shared")


def connection(stack: Stack, conn_id: str) -> Connection:
    with Session(stack.rt.engine) as db:
        conn = db.get(Connection, conn_id)
    assert conn is not None
    return conn


def records(stack: Stack, conn_id: str) -> list[ConsentRecord]:
    with Session(stack.rt.engine) as db:
        query_ = select(ConsentRecord).where(ConsentRecord.connection_id == conn_id)
        return list(db.exec(query_.order_by(col(ConsentRecord.recorded_at))).all())


def granted_events(stack: Stack) -> list[AuditRow]:
    with Session(stack.rt.engine) as db:
        query_ = select(AuditRow).where(AuditRow.event == "consent.granted")
        return list(db.exec(query_.order_by(col(AuditRow.seq))).all())


def paused_by_policy_text(stack: Stack, browser: Browser, optional: list[str]) -> str:
    """Connect, then change the sandbox's privacy policy and check it: paused."""
    stack.provider.set_policy("privacy", POLICY)
    conn_id = connect(stack, browser, optional=optional)
    assert share(stack, conn_id, data=WORK) == 201
    stack.provider.set_policy("privacy", SOLD)
    (outcome,) = check_policies(stack.rt, actor="test")  # what `broker policies check` runs
    assert outcome.change is not None and outcome.change.classification == "significant"
    assert connection(stack, conn_id).status == "reconsent_required"
    assert share(stack, conn_id, data=WORK) == 409  # blocked, nothing sent
    return conn_id


def swap_manifest(stack: Stack, change) -> PolicyChange | None:
    """The running broker's sandbox connector, its manifest changed (as a reload would)."""
    raw = copy.deepcopy(sandbox_manifest(stack.sandbox.url))
    change(raw)
    manifest = parse_manifest(raw, default_catalog(), source="test")
    connector = Connector(manifest, ConnectorSource("builtin", "test"))
    stack.rt.registry.connectors[connector.id] = connector
    return record_terms(stack.rt, connector, actor="test")


def reconsent_form(browser: Browser, stack: Stack, conn_id: str) -> tuple[str, dict]:
    page = browser.get(f"{stack.url}/me/connections/{conn_id}/reconsent")
    assert page.status_code == 200, page.text
    return page.text, form_fields(page.text)


def checked(page: str, category: str) -> bool:
    block = re.search(rf'data-category="{re.escape(category)}".*?</div>', page, re.S)
    assert block, f"{category} is not on the page"
    return " checked" in block.group(0)


def test_notice_diff_and_reconsent_resume_the_same_connection(
    stack: Stack, browser: Browser
) -> None:
    with stack.api() as api:  # the host listens for consents and activations
        hook = api.post(
            "/v1/webhook-endpoints",
            json={
                "url": "http://127.0.0.1:9/hooks",
                "events": ["connection.created", "consent.granted", "connection.activated"],
            },
        )
        assert hook.status_code == 201, hook.text
    conn_id = paused_by_policy_text(stack, browser, optional=[NAME])
    before = records(stack, conn_id)[0]
    with stack.api() as api:
        notices = api.get("/v1/users/user-1/notices")
        assert api.get("/v1/users/user-2/notices").json()["data"] == []
    assert notices.status_code == 200, notices.text
    (notice,) = notices.json()["data"]
    assert notice["kind"] == "reconsent_required" and notice["action_required"] is True
    assert notice["connection_id"] == conn_id
    (change,) = notice["changes"]
    assert change["classification"] == "significant"
    assert change["pages_changed"] == ["privacy_policy"]
    assert any("privacy policy text changed" in t for t in notice["summary"])
    assert notice["since"] == change["detected_at"] and change["detected_at"].endswith("Z")

    sign_in(stack, browser)
    me = browser.get(f"{stack.url}/me").text
    assert f'data-notice="{conn_id}"' in me and 'data-kind="reconsent_required"' in me
    assert "sharing is paused" in me
    diff_path = f"/me/changes/{change['change_id']}/privacy_policy"
    assert f'href="{stack.url}{diff_path}"' in me
    assert f'href="{stack.url}/me/connections/{conn_id}/reconsent"' in me

    diff = browser.get(f"{stack.url}{diff_path}")
    assert diff.status_code == 200, diff.text
    assert "<script>x()" not in diff.text  # the policy's text is escaped, never markup
    assert "&lt;script&gt;x()&lt;/script&gt;" in diff.text
    assert re.search(r'class="removed".*Clause 3: nothing here is shared', diff.text)
    assert re.search(r'class="added".*Clause 3: everything is sold to data brokers', diff.text)
    assert "Clause 5: nothing here is shared" in diff.text  # unchanged text shown as is
    assert browser.get(f"{stack.url}/me/changes/pchg_nope/privacy_policy").status_code == 404

    page, fields = reconsent_form(browser, stack, conn_id)
    assert "Agree to the new terms" in page  # the same scopes: no sign-in at the provider
    assert checked(page, NAME) and not checked(page, EMAIL)  # earlier choice kept
    done = browser.post(
        f"{stack.url}/me/connections/{conn_id}/reconsent",
        data={**fields, "decision": "approve", "categories": [NAME]},
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/me?agreed={conn_id}"

    conn = connection(stack, conn_id)
    new_terms = current_terms_version(stack.rt, "sandbox", fresh=True)
    assert conn.status == "active" and conn.last_error is None
    old, new = records(stack, conn_id)
    assert old.id == before.id and conn.consent_id == new.id
    assert new.terms_version == new_terms != old.terms_version
    assert new.granted_categories == ["user.content.work_items", NAME]
    assert new.policy_digests["privacy_policy"] != old.policy_digests["privacy_policy"]
    event = granted_events(stack)[-1]
    assert event.connection_id == conn_id and event.consent_id == new.id
    assert event.outcome == "active"
    assert event.details["renewed"] == "reconsent"
    assert event.details["terms_version"] == new_terms
    assert event.details["previous_consent_id"] == old.id
    with Session(stack.rt.engine) as db:  # a renewal announces no new connection
        sent = [
            d.event_type
            for d in db.exec(select(WebhookDelivery)).all()
            if d.payload.get("connection_id") == conn_id
        ]
    first_connect = ["connection.created", "consent.granted", "connection.activated"]
    renewal = ["consent.granted", "connection.activated"]  # no connection.created
    assert sorted(sent) == sorted(first_connect + renewal)

    with stack.api() as api:
        delivered = api.post(
            f"/v1/connections/{conn_id}/transfers",
            json={"action": "post_message", "data": {"work_item": {"id": "W-2", "title": "x"}}},
        )
        assert delivered.status_code == 201, delivered.text
        assert api.get("/v1/users/user-1/notices").json()["data"] == []
    with Session(stack.rt.engine) as db:
        row = db.get(Transfer, delivered.json()["id"])
    assert row is not None and row.status == "delivered" and row.terms_version == new_terms
    me = browser.get(f"{stack.url}/me?agreed={conn_id}").text  # where the answer went
    assert "You agreed to Sandbox Co.'s new terms" in me.replace("&#39;", "'")
    assert f'data-notice="{conn_id}"' not in me
    # answered: the page goes back to the list, and a second answer is refused
    again = browser.get(f"{stack.url}/me/connections/{conn_id}/reconsent")
    assert again.status_code == 303
    twice = browser.post(
        f"{stack.url}/me/connections/{conn_id}/reconsent", data={**fields, "decision": "approve"}
    )
    assert twice.status_code == 409
    assert verify_log(stack.rt).ok


def test_declining_disconnects(stack: Stack, browser: Browser) -> None:
    conn_id = paused_by_policy_text(stack, browser, optional=[])
    sign_in(stack, browser)
    _, fields = reconsent_form(browser, stack, conn_id)
    done = browser.post(
        f"{stack.url}/me/connections/{conn_id}/reconsent", data={**fields, "decision": "decline"}
    )
    assert done.status_code == 303, done.text
    assert query(done.headers["location"])["disconnected"] == conn_id
    assert connection(stack, conn_id).status == "revoked"
    assert len(records(stack, conn_id)) == 1  # no new consent
    with Session(stack.rt.engine) as db:
        withdrawn = db.exec(
            select(AuditRow).where(
                AuditRow.event == "consent.withdrawn", AuditRow.connection_id == conn_id
            )
        ).all()
    assert len(withdrawn) == 1 and withdrawn[0].actor.startswith("user:")  # the user did it
    with stack.api() as api:
        assert api.get("/v1/users/user-1/notices").json()["data"] == []


def test_a_minor_change_is_listed_and_pauses_nothing(stack: Stack, browser: Browser) -> None:
    stack.provider.set_policy("privacy", POLICY)
    conn_id = connect(stack, browser, optional=[])
    stack.provider.set_policy("privacy", POLICY.replace("Clause 3:", "Clause three:"))
    (outcome,) = check_policies(stack.rt, actor="test")
    assert outcome.change is not None and outcome.change.classification == "minor"
    assert connection(stack, conn_id).status == "active"
    with stack.api() as api:
        (notice,) = api.get("/v1/users/user-1/notices").json()["data"]
    assert notice["kind"] == "terms_changed" and notice["action_required"] is False
    sign_in(stack, browser)
    me = browser.get(f"{stack.url}/me").text
    assert 'data-kind="terms_changed"' in me and "made minor changes" in me
    assert f"/me/connections/{conn_id}/reconsent" not in me
    assert share(stack, conn_id, data=WORK) == 201
    # not paused, so there is nothing to agree to
    assert browser.get(f"{stack.url}/me/connections/{conn_id}/reconsent").status_code == 303


def test_a_changed_category_is_not_preselected(stack: Stack, browser: Browser) -> None:
    conn_id = connect(stack, browser, optional=[NAME, EMAIL])

    def new_purpose(raw: dict) -> None:
        for d in raw["data"]:
            if d["category"] == EMAIL:
                d["purpose"] = "Send you offers from our partners"

    change = swap_manifest(stack, new_purpose)
    assert change is not None and change.paused == [conn_id]
    sign_in(stack, browser)
    page, fields = reconsent_form(browser, stack, conn_id)
    assert checked(page, NAME) and not checked(page, EMAIL)
    assert re.search(rf'data-category="{EMAIL}" data-mark="changed"', page)
    assert re.search(rf'data-category="{NAME}" data-mark="unchanged"', page)
    assert "Mention the assignee" in page  # what it was for before
    done = browser.post(
        f"{stack.url}/me/connections/{conn_id}/reconsent",
        data={**fields, "decision": "approve", "categories": [NAME, "user.unknown"]},
    )
    assert done.status_code == 422  # only optional categories can be ticked
    done = browser.post(
        f"{stack.url}/me/connections/{conn_id}/reconsent",
        data={**fields, "decision": "approve", "categories": [NAME]},
    )
    assert done.status_code == 303, done.text
    latest = records(stack, conn_id)[-1]
    assert latest.declined_categories == [EMAIL]
    assert latest.purposes[EMAIL] == "Send you offers from our partners"


def test_changed_scopes_reauthorise_the_same_connection(stack: Stack, browser: Browser) -> None:
    conn_id = connect(stack, browser, optional=[])

    def more(raw: dict) -> None:
        raw["oauth"]["scopes"] = ["messages:write"]  # other scopes: a new authorisation
        raw["data"].append({"category": "user.contact.phone_number", "purpose": "Call you"})

    assert swap_manifest(stack, more).paused == [conn_id]
    sign_in(stack, browser)
    page, fields = reconsent_form(browser, stack, conn_id)
    assert "Agree and continue to Sandbox Co." in page
    to_consent = browser.post(
        f"{stack.url}/me/connections/{conn_id}/reconsent", data={**fields, "decision": "approve"}
    )
    assert to_consent.status_code == 303
    consent_url = to_consent.headers["location"]
    assert consent_url.startswith(f"{stack.url}/connect/sandbox?session=")
    to_provider = browser.approve(consent_url, [])
    assert to_provider.status_code == 303, to_provider.text
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    done = browser.get(back.headers["location"])
    assert done.status_code == 200, done.text  # no return URL: the broker's own page
    conn = connection(stack, conn_id)
    assert conn.status == "active"
    latest = records(stack, conn_id)[-1]
    assert latest.scopes == ["messages:write"]
    assert "user.contact.phone_number" in latest.granted_categories
    assert granted_events(stack)[-1].details["renewed"] == "reconnect"
    with Session(stack.rt.engine) as db:
        assert len(db.exec(select(Connection)).all()) == 1


def test_a_second_connect_reauthorises_the_live_connection(stack: Stack, browser: Browser) -> None:
    first = connect(stack, browser, optional=[])
    with Session(stack.rt.engine) as db:
        token_before = db.get(ConnectionToken, first).access_token
    again = connect(stack, browser, optional=[NAME])
    assert again == first
    _, new = records(stack, first)
    conn = connection(stack, first)
    assert conn.status == "active" and conn.consent_id == new.id
    assert new.granted_categories == ["user.content.work_items", NAME]
    with Session(stack.rt.engine) as db:
        token_after = db.get(ConnectionToken, first).access_token
    assert token_after != token_before  # new tokens, sealed anew
    event = granted_events(stack)[-1]
    assert event.details["renewed"] == "reconnect" and event.connection_id == first
    assert share(stack, first, data=WORK) == 201
    # opted out: a second connection; another user's connect never reuses this one
    separate = connect(stack, browser, optional=[], reconnect=False)
    other = connect(stack, browser, optional=[], user_id="user-2")
    assert len({first, separate, other}) == 3
    assert connection(stack, first).status == "active"
    assert len(records(stack, separate)) == 1
    assert verify_log(stack.rt).ok
