"""The transfer gateway's decision table: pure, no database, no network."""

from __future__ import annotations

import pytest

from broker.core.catalog import default_catalog
from broker.core.errors import (
    ConnectionNotActive,
    ForbiddenUse,
    InvalidInput,
    OutsideGrant,
    PurposeNotDeclared,
    UserObjected,
)
from broker.core.gateway import Allowed, Refused, TransferRequest, decide
from broker.core.manifest import Manifest, parse_manifest
from broker.core.policy import Policy, load_policy
from broker.core.scope import canonical_payload, payload_digest
from broker.demo import sandbox_manifest

CATALOG = default_catalog()
MANIFEST = parse_manifest(sandbox_manifest("http://127.0.0.1:9"), CATALOG, source="test")
WORK = "user.content.work_items"
NAME = "user.name"
EMAIL = "user.contact.email"
ITEM = {"work_item": {"id": "W-1", "title": "Ship"}}
WITH_NAME = {**ITEM, "author": {"name": "Ann"}}
WITH_EMAIL = {**ITEM, "author": {"email": "ann@example.com"}}


def verdict(
    data: dict,
    *,
    granted: list[str] | None = (WORK, NAME),  # type: ignore[assignment]
    status: str = "active",
    policy: Policy | None = None,
    **kw: object,
) -> Allowed | Refused:
    return decide(
        manifest=MANIFEST,
        catalog=CATALOG,
        policy=policy or load_policy(),
        connection_status=status,
        granted=granted,
        request=TransferRequest(action="post_message", data=data, **kw),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("case", "data", "kw", "error", "reason"),
    [
        ("revoked", ITEM, {"status": "revoked"}, ConnectionNotActive, "connection is revoked"),
        (
            "unconfirmed",
            ITEM,
            {"status": "pending_confirmation"},
            ConnectionNotActive,
            "connection is pending_confirmation",
        ),
        ("no consent", ITEM, {"granted": None}, ConnectionNotActive, "connection is active"),
        ("outside, reject", WITH_EMAIL, {}, OutsideGrant, "fields outside the grant"),
        (
            "nothing left after drop",
            {"author": {"email": "a@example.com"}},
            {"mode": "drop"},
            OutsideGrant,
            "nothing within the grant",
        ),
        ("undeclared purpose", ITEM, {"purpose": "Sell it"}, PurposeNotDeclared, None),
        (
            "undeclared use",
            ITEM,
            {"use": "analytics.reporting"},
            PurposeNotDeclared,
            "use not declared",
        ),
        (
            "forbidden use",
            ITEM,
            {"policy": Policy(forbidden_uses=("functional.service",), source="t")},
            ForbiddenUse,
            "forbidden use",
        ),
    ],
)
def test_refusals(case: str, data: dict, kw: dict, error: type, reason: str | None) -> None:
    v = verdict(data, **kw)
    assert isinstance(v, Refused), case
    assert v.error is error
    if reason:
        assert v.reason == reason
    exc = v.exception("tr_1")
    assert isinstance(exc, error) and exc.details["transfer_id"] == "tr_1"


def test_outside_in_reject_mode_names_each_field_and_its_category() -> None:
    v = verdict(WITH_EMAIL)
    assert isinstance(v, Refused)
    assert v.details["fields"] == [{"path": "author.email", "category": EMAIL}]
    assert EMAIL in v.categories and "author.email" in v.field_paths


def test_allowed_carries_the_exact_body_and_its_digest() -> None:
    v = verdict(WITH_NAME)
    assert isinstance(v, Allowed)
    assert set(v.categories) == {WORK, NAME}
    assert v.body == canonical_payload(WITH_NAME)
    assert v.payload_sha256 == payload_digest(v.body)
    assert v.purpose  # the declared purposes, joined
    assert v.dropped == ()


def test_drop_mode_sends_the_rest_and_records_what_was_dropped() -> None:
    v = verdict({**WITH_NAME, "author": {"name": "Ann", "email": "a@example.com"}}, mode="drop")
    assert isinstance(v, Allowed)
    assert v.data == WITH_NAME
    assert v.dropped == ({"path": "author.email", "category": EMAIL},)
    assert v.payload_sha256 == payload_digest(canonical_payload(WITH_NAME))


def test_a_refusal_still_has_the_digest_an_idempotent_replay_compares() -> None:
    v = verdict(ITEM, status="revoked")
    assert v.payload_sha256 == payload_digest(canonical_payload(ITEM))


@pytest.mark.parametrize(
    ("body", "header", "problem"),
    [
        ([], None, "JSON object"),
        ({"action": "x", "data": {}, "extra": 1}, None, "unknown field"),
        ({"data": {}}, None, "action"),
        ({"action": "x", "data": []}, None, "data"),
        ({"action": "x", "data": {}, "mode": "lenient"}, None, "mode"),
        ({"action": "x", "data": {}, "idempotency_key": "a"}, "b", "differ"),
        ({"action": "x", "data": {}}, "k" * 201, "1-200"),
    ],
)
def test_request_parsing_refuses_bad_bodies(body: object, header: str | None, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        TransferRequest.parse(body, idempotency_key=header)


def test_the_idempotency_key_header_fills_the_request() -> None:
    parsed = TransferRequest.parse({"action": "x", "data": {}}, idempotency_key="k-1")
    assert parsed.idempotency_key == "k-1"


# --- objections (GDPR Art. 21(2)-(3)) -------------------------------------------------


def _marketing_manifest() -> Manifest:
    raw = sandbox_manifest("http://127.0.0.1:9")
    for d in raw["data"]:
        if d["category"] == EMAIL:
            d.update(use="marketing.advertising", purpose="Send you offers", required=True)
    return parse_manifest(raw, CATALOG, source="test")


MARKETING = _marketing_manifest()


def objecting(data: dict, objections: tuple[str, ...], **kw: object) -> Allowed | Refused:
    return decide(
        manifest=MARKETING,
        catalog=CATALOG,
        policy=kw.pop("policy", None) or load_policy(),  # type: ignore[arg-type]
        connection_status=kw.pop("status", "active"),  # type: ignore[arg-type]
        granted=(WORK, NAME, EMAIL),
        request=TransferRequest(action="post_message", data=data, **kw),  # type: ignore[arg-type]
        objections=objections,
    )


AD = "marketing.advertising"
MKT = ("marketing",)


@pytest.mark.parametrize(
    ("case", "data", "objections", "kw", "use", "by"),
    [
        ("marketing covers its keys", WITH_EMAIL, MKT, {}, AD, "marketing"),
        ("the exact key", WITH_EMAIL, (AD,), {}, AD, AD),
        ("named use", WITH_EMAIL, MKT, {"use": AD}, AD, "marketing"),
        ("other named use", WITH_EMAIL, MKT, {"use": "functional.service"}, AD, "marketing"),
        ("drop mode is refused too", WITH_EMAIL, MKT, {"mode": "drop"}, AD, "marketing"),
        ("an operator-listed use", ITEM, ("functional",), {}, "functional.service", "functional"),
    ],
)  # fmt: skip
def test_an_objected_use_is_refused(
    case: str, data: dict, objections: tuple[str, ...], kw: dict, use: str, by: str
) -> None:
    v = objecting(data, objections, **kw)
    assert isinstance(v, Refused), case
    assert v.error is UserObjected and v.reason == "user objected"
    assert v.record == {"use": use, "objection": by} and v.details == v.record
    exc = v.exception("tr_1")
    assert exc.code == "user_objected" and exc.status == 403
    assert exc.details == {"transfer_id": "tr_1", "use": use, "objection": by}


@pytest.mark.parametrize(
    ("case", "data", "objections"),
    [
        ("no objection", WITH_EMAIL, ()),
        ("a narrower objection elsewhere", WITH_EMAIL, ("marketing.communications",)),
        ("no marketing category sent", WITH_NAME, ("marketing",)),
        ("a sibling key is not a parent", WITH_EMAIL, ("marketing.adv",)),
    ],
)
def test_what_the_objection_does_not_cover_is_allowed(
    case: str, data: dict, objections: tuple[str, ...]
) -> None:
    assert isinstance(objecting(data, objections), Allowed), case


def test_earlier_refusals_come_before_the_objection() -> None:
    inactive = objecting(WITH_EMAIL, ("marketing",), status="revoked")
    assert isinstance(inactive, Refused) and inactive.error is ConnectionNotActive
    policy = Policy(forbidden_uses=("marketing.advertising",), source="t")
    forbidden = objecting(WITH_EMAIL, ("marketing",), policy=policy)
    assert isinstance(forbidden, Refused) and forbidden.error is ForbiddenUse
