"""The sentence diff of a policy page, and which webhooks a renewed consent sends."""

from __future__ import annotations

from broker.core.webhooks import webhook_events
from broker.flows.notices import diff_rows


def test_diff_rows_keep_order_and_mark_only_what_changed() -> None:
    before = "One stays. Two goes away. Three stays too."
    after = "One stays. Two is new! Three stays too. Four is added."
    assert diff_rows(before, after) == [
        ("same", "One stays."),
        ("removed", "Two goes away."),
        ("added", "Two is new!"),
        ("same", "Three stays too."),
        ("added", "Four is added."),
    ]
    assert diff_rows(before, before) == [
        ("same", s) for s in ("One stays.", "Two goes away.", "Three stays too.")
    ]


def test_a_renewed_consent_announces_no_new_connection() -> None:
    assert webhook_events("consent.granted", "active") == (
        "connection.created",
        "consent.granted",
        "connection.activated",
    )
    for renewed in ("reconsent", "reconnect"):
        details = {"renewed": renewed}
        assert webhook_events("consent.granted", "active", details) == (
            "consent.granted",
            "connection.activated",
        )
        assert webhook_events("consent.granted", "pending_confirmation", details) == (
            "consent.granted",
        )
