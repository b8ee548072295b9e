"""Pseudonyms and salted payload digests (broker.core.pseudonyms): log format 2."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from broker.core.errors import InvalidInput
from broker.core.pseudonyms import (
    ERASED_EVENT,
    FORMAT_EVENT,
    LOG_FORMAT,
    handover_details,
    is_pseudonym,
    new_salt,
    new_subject_key,
    pseudonym,
    pseudonymise,
    salted_digest,
)

KEY = bytes(range(32))


def test_pseudonym_is_hmac_sha256_of_the_user_id_under_the_subject_key() -> None:
    expected = hmac.new(KEY, b"user-1", hashlib.sha256).hexdigest()
    assert pseudonym(KEY, "user-1") == expected
    assert is_pseudonym(expected)
    assert pseudonym(KEY, "user-2") != expected
    assert pseudonym(bytes(32), "user-1") != expected  # another key: another pseudonym


def test_pseudonym_encodes_the_user_id_as_utf8() -> None:
    expected = hmac.new(KEY, "usér".encode(), hashlib.sha256).hexdigest()
    assert pseudonym(KEY, "usér") == expected


@pytest.mark.parametrize("key, user_id", [(b"short", "u"), (KEY, ""), (KEY, None)])
def test_pseudonym_refuses_weak_keys_and_empty_ids(key: bytes, user_id: object) -> None:
    with pytest.raises(InvalidInput):
        pseudonym(key, user_id)  # type: ignore[arg-type]


def test_salted_digest_is_hmac_of_the_payload_and_not_its_plain_sha256() -> None:
    body = b'{"email":"ann@example.com"}'
    salt = new_salt()
    assert len(salt) == 32 and new_salt() != salt
    digest = salted_digest(salt, body)
    assert digest == hmac.new(salt, body, hashlib.sha256).hexdigest()
    assert digest != hashlib.sha256(body).hexdigest()  # no guessing without the salt
    assert salted_digest(new_salt(), body) != digest
    with pytest.raises(InvalidInput):
        salted_digest(b"", body)


def test_subject_keys_are_random() -> None:
    keys = {new_subject_key() for _ in range(8)}
    assert len(keys) == 8 and all(len(k) == 32 for k in keys)


def test_pseudonymise_replaces_user_id_and_user_actor_only() -> None:
    names = {"user-1": "p" * 64}
    content = {"event": "consent.granted", "actor": "user:user-1", "user_id": "user-1"}
    assert pseudonymise(content, names.__getitem__) is content
    assert content == {"event": "consent.granted", "actor": "user:" + "p" * 64, "user_id": "p" * 64}
    admin = {"event": "transfer.pending", "actor": "key_abc", "user_id": "user-1"}
    pseudonymise(admin, names.__getitem__)
    assert admin["actor"] == "key_abc" and admin["user_id"] == "p" * 64
    nobody = {"event": "key.rotated", "actor": "cli"}
    assert pseudonymise(nobody, names.__getitem__) == {"event": "key.rotated", "actor": "cli"}


def test_pseudonymise_leaves_erased_rows_and_preset_events_without_a_lookup() -> None:
    def never(_: str) -> str:
        raise AssertionError("no key may be looked up")

    erased = {
        "event": "transfer.delivered",
        "actor": "user:~" + "a" * 64,
        "user_id": "~" + "a" * 64,
    }
    pseudonymise(erased, never)
    assert erased["user_id"] == "a" * 64 and erased["actor"] == "user:" + "a" * 64
    for event in (ERASED_EVENT, FORMAT_EVENT):
        content = {"event": event, "actor": "cli", "user_id": "b" * 64}
        assert pseudonymise(content, never)["user_id"] == "b" * 64


def test_handover_details_commit_to_the_old_log() -> None:
    details = handover_details(previous_size=7, previous_root=b"\x01" * 32)
    assert details["format"] == LOG_FORMAT == 2
    assert details["previous"] == {"format": 1, "size": 7, "root": "01" * 32}
    with pytest.raises(InvalidInput):
        handover_details(previous_size=-1, previous_root=b"\x01" * 32)
    with pytest.raises(InvalidInput):
        handover_details(previous_size=1, previous_root=b"\x01")
