"""The console's views of the whole log (issue 13 point 4, issue 11 point 7): Events
(filtered, paged), a page per transfer (attempts, consent and terms, audit entries and
their inclusion proofs), terms changes with the connections paused and re-consented,
and charts of delivered, failed and blocked transfers, through a real server."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, select

from broker.core.merkle import verify_inclusion
from broker.flows.checkpoints import sign_checkpoint
from broker.store.db import session_scope
from broker.store.models import AuditRow, Connection, ConsentRecord, Transfer
from broker.store.policy_models import PolicyChange
from tests.integration.conftest import Browser, Stack
from tests.integration.test_audit_console import seed, sign_in


def _link(page: str, label: str) -> str:
    return re.search(rf'href="([^"]+)">{label}', page).group(1).replace("&amp;", "&")


def _transfers(stack: Stack) -> dict[str, Transfer]:
    with Session(stack.rt.engine) as db:
        return {t.status: t for t in db.exec(select(Transfer))}


def test_events_lists_the_whole_log_filtered_and_paged(stack: Stack, browser: Browser) -> None:
    seed(stack, browser)
    sign_in(browser, stack)
    page = browser.get(f"{stack.url}/audit/events").text
    for event in ("consent.granted", "transfer.delivered", "transfer.blocked"):
        assert f"<code>{event}</code>" in page
    seqs = [int(s) for s in re.findall(r'<tr data-seq="(\d+)">', page)]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) >= 4  # newest first
    consents = browser.get(f"{stack.url}/audit/events?event=consent.").text
    assert "<code>consent.granted</code>" in consents
    assert "<code>transfer.delivered</code>" not in consents
    assert '<option value="consent." selected>' in consents
    one = browser.get(f"{stack.url}/audit/events?event=transfer.blocked").text
    assert one.count("<tr data-seq=") == 1
    assert (
        "No entries match this filter."
        in browser.get(f"{stack.url}/audit/events?user=someone-else").text
    )
    later = browser.get(f"{stack.url}/audit/events?since=2999-01-01T00:00").text
    assert "No entries match" in later
    bad = browser.get(f"{stack.url}/audit/events?until=tomorrow").text
    assert 'role="alert"' in bad and "is not a date and time" in bad
    assert 'role="alert"' in browser.get(f"{stack.url}/audit/events?cursor=nonsense").text
    # pages of 25 that keep the filter, neither overlapping nor skipping
    with stack.api() as api:
        conn = api.get("/v1/users/user-1/connections").json()["connections"][0]["id"]
        for _ in range(25):
            api.post(
                f"/v1/connections/{conn}/transfers",
                json={"action": "post_message", "data": {"x": {"email": "a@b.c"}}},
            )
    first = browser.get(f"{stack.url}/audit/events?limit=25&event=transfer.").text
    older = _link(first, "Older entries")
    assert "limit=25" in older and "event=transfer." in older
    second = browser.get(older).text
    a = re.findall(r'<tr data-seq="(\d+)">', first)
    b = re.findall(r'<tr data-seq="(\d+)">', second)
    with Session(stack.rt.engine) as db:
        every = {str(r.seq) for r in db.exec(select(AuditRow)) if r.event.startswith("transfer.")}
    assert len(a) == 25 and not set(a) & set(b) and set(a) | set(b) == every
    assert int(b[0]) < int(a[-1])
    # an entry about a transfer links to the transfer's page
    tid = _transfers(stack)["delivered"].id
    assert f'/audit/transfers/{tid}"' in page


def test_a_transfer_page_shows_attempts_consent_entries_and_proofs(
    stack: Stack, browser: Browser
) -> None:
    seed(stack, browser)
    sign_in(browser, stack)
    rows = _transfers(stack)
    delivered, blocked = rows["delivered"], rows["blocked"]
    listing = browser.get(f"{stack.url}/audit").text
    assert f'/audit/transfers/{delivered.id}"' in listing  # ids link everywhere
    page = browser.get(f"{stack.url}/audit/transfers/{delivered.id}").text
    assert f"<h1>Transfer <code>{delivered.id}</code></h1>" in page
    assert delivered.payload_sha256 in page and f"{delivered.payload_bytes} bytes" in page
    assert re.search(r"<td>20[01]</td>", page)  # the attempt's HTTP status
    assert delivered.consent_id in page and "Terms version agreed to" in page
    assert delivered.terms_version and delivered.terms_version[:16] in page
    assert "<code>transfer.delivered</code>" in page
    assert "no checkpoint yet" in page
    checkpoint = sign_checkpoint(stack.rt)
    page = browser.get(f"{stack.url}/audit/transfers/{delivered.id}").text
    proof_url = re.search(r'href="([^"]*/audit/proof/\d+)"', page).group(1)
    proof = browser.get(proof_url).json()
    assert proof["tree_size"] == checkpoint.tree_size
    assert proof["root_hash"] == checkpoint.root_hash and proof["checkpoint"] == checkpoint.note
    assert verify_inclusion(
        bytes.fromhex(proof["leaf_hash"]),
        proof["leaf_index"],
        proof["tree_size"],
        [bytes.fromhex(h) for h in proof["proof"]],
        bytes.fromhex(proof["root_hash"]),
    )
    after = browser.get(f"{stack.url}/audit/proof/{checkpoint.tree_size + 1}")
    assert after.status_code == 422 and "after the latest checkpoint" in after.text
    # a blocked transfer names the fields outside the grant, and nothing was sent
    page = browser.get(f"{stack.url}/audit/transfers/{blocked.id}").text
    assert "Fields outside the grant" in page and "<code>x.email</code>" in page
    assert "none (nothing was sent)" in page
    missing = browser.get(f"{stack.url}/audit/transfers/tr_nope")
    assert missing.status_code == 404
    assert browser.get(f"{stack.url}/audit/snapshots/{'0' * 64}").status_code == 404


def test_terms_changes_show_paused_connections_and_reconsent(
    stack: Stack, browser: Browser
) -> None:
    connection_id = seed(stack, browser)
    sign_in(browser, stack)
    with Session(stack.rt.engine) as db:
        conn = db.get(Connection, connection_id)
        before = db.get(ConsentRecord, conn.consent_id)
    now = datetime.now(UTC)
    with session_scope(stack.rt.engine) as db:  # a significant change, then a re-consent
        db.add(PolicyChange(
            id="pc_test", connector_id="sandbox", before_version=before.terms_version or "a" * 64,
            after_version="b" * 64, detected_at=now, detected_by="check",
            classification="significant", changes=[{"code": "category_added",
            "significant": True, "text": "new required data: user.contact.email"}],
            digests={"before": {"privacy_policy": "c" * 64}, "after": {"privacy_policy": None}},
            paused=[connection_id, "conn_gone"],
        ))  # fmt: skip
        again = before.model_dump()
        again.update(id="cr_again", terms_version="b" * 64, consented_at=now + timedelta(hours=1))
        db.add(ConsentRecord(**again))
    page = browser.get(f"{stack.url}/audit/terms-changes").text
    section = page[page.index('data-change="pc_test"') :]
    assert "significant change" in page and "new required data: user.contact.email" in section
    assert f'<tr data-connection="{connection_id}">' in section
    assert "(consent <code>cr_again</code>)" in section  # when its user agreed again
    row = section[section.index('data-connection="conn_gone"') :]
    assert "gone" in row[:200] and "not yet" in row[:300]
    assert "not retrieved" in section and f"/audit/snapshots/{'c' * 64}" in section
    assert "/audit/events?event=policy." in page  # the policy events, one click away
    events = browser.get(f"{stack.url}/audit/events?event=policy.").text
    assert '<option value="policy." selected>' in events


def test_charts_of_delivered_failed_and_blocked(stack: Stack, browser: Browser) -> None:
    seed(stack, browser)
    sign_in(browser, stack)
    page = browser.get(f"{stack.url}/audit/recipients?days=7").text
    for status in ("delivered", "failed", "blocked"):
        assert f'<title id="chart-{status}-title">' in page
    blocked = page[page.index('id="chart-blocked-title"') :]
    assert "1 blocked transfer in all; Sandbox Co.: 1." in blocked[: blocked.index("</svg>")]
    failed = page[page.index('id="chart-failed-title"') :]
    assert "No failed transfers in this period" in failed[: failed.index("</svg>")]
    # the same recipient has the same colour on every chart
    bar = r'<rect x="[^"]+" y="[^"]+" width="[^"]+" height="[^"]+" fill="(#\w+)"'
    colours = set(re.findall(bar, page))
    assert len(colours) == 1
    css = browser.get(f"{stack.url}/static/broker.css").text
    assert "@media print" in css  # the console prints without its navigation and forms


def test_the_console_export_is_pinned_to_the_log_state(stack: Stack, browser: Browser) -> None:
    seed(stack, browser)
    sign_in(browser, stack)
    checkpoint = sign_checkpoint(stack.rt)
    text = browser.get(f"{stack.url}/audit/export?format=csv").text
    head = dict(line[2:].split(": ", 1) for line in text.splitlines() if line.startswith("# "))
    assert head["log_checkpoint_tree_size"] == str(checkpoint.tree_size)
    assert head["log_checkpoint_root_hash"] == checkpoint.root_hash
    assert datetime.fromisoformat(head["generated_at"]).tzinfo is not None
    lines = browser.get(f"{stack.url}/audit/export?format=jsonl").text.splitlines()
    assert all("status" in json.loads(x) for x in lines)  # JSON Lines: transfers only
