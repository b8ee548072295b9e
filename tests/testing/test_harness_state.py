"""What a connector's tests may ask the harness about the broker's state, instead of
reaching into the broker's store or flows."""

from __future__ import annotations

import pytest

from broker.connector import InvalidInput
from broker.core.catalog import default_catalog
from broker.demo import sandbox_connector
from broker.testing import BrokerHarness, StoredConnection


@pytest.fixture
def harness(make_harness) -> BrokerHarness:
    return make_harness(sandbox_connector(default_catalog(), "https://sandbox.example.com"))


def test_stored_shows_the_connection_and_whether_tokens_are_held(harness) -> None:
    connection = harness.connect("user-7")
    stored = harness.stored(connection)
    assert isinstance(stored, StoredConnection)
    assert (stored.id, stored.connector_id, stored.user_id) == (connection, "sandbox", "user-7")
    assert stored.status == "active" and stored.last_error is None
    assert stored.settings == {}
    assert stored.has_access_token and stored.has_refresh_token
    assert not {"access_token", "refresh_token"} & set(vars(stored)), "never the tokens"
    harness.revoke(connection)
    after = harness.stored(connection)
    assert after.status == "revoked"
    assert not after.has_access_token and not after.has_refresh_token


def test_stored_names_an_unknown_connection(harness) -> None:
    with pytest.raises(AssertionError, match="no connection nope"):
        harness.stored("nope")


def test_begin_connect_returns_the_link_or_refuses_as_the_api_does(harness) -> None:
    assert "/connect/sandbox?session=" in harness.begin_connect()
    with pytest.raises(InvalidInput) as info:
        harness.begin_connect(settings={"channel": "C1"})
    assert info.value.details["field"] == "settings.channel"
