"""The contract every connector passes: subclass :class:`ConnectorContract`.

::

    class TestAcmeContract(ConnectorContract):
        connector = AcmeChat                    # class, instance, or manifest path
        settings = {"workspace": "team-1"}      # the connection's [[settings]]
        example_payload = {"work_item": {"id": "W-1", "title": "Ship it"}}
        error_cases = [ErrorCase(400, {"error": "bad_channel"}, "bad_channel")]

It checks that the manifest validates against the catalog, that the policy and
terms links are https, that every category exists, that the connector sends
nothing it was not granted (property-based, see :mod:`broker.testing.leaks`),
that the third party's errors end as ``failed`` transfers carrying its message,
that a delivery goes through end to end, and that revocation reaches the
provider when it has an endpoint.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from broker.core.catalog import default_catalog
from broker.core.connector import Connector, ConnectorSource, check_hook_signatures
from broker.core.dispatch import dispatch
from broker.core.egress import EgressTransport, allowed_origins
from broker.core.manifest import load_manifest_file, parse_manifest
from broker.core.scope import check_scope, drop_fields
from broker.testing.fake_provider import FakeProvider, IssuedTokens, standard_token_response
from broker.testing.harness import BrokerHarness
from broker.testing.leaks import (
    leaf_strings,
    payload_strategy,
    request_atoms,
    traceable_values,
    unexplained,
    vocabulary,
)

__all__ = ["ConnectorContract", "ErrorCase", "load_connector"]

_UA = "broker-contract-test"


@dataclass(frozen=True)
class ErrorCase:
    """How the third party says no, and the text the failed transfer must show."""

    status: int
    body: Any
    message: str
    method: str | None = None  # default: the action's
    url: str | None = None  # default: the action's (filled in with the settings)


def load_connector(spec: Any) -> Connector:
    """A connector from a class (with ``MANIFEST``), an instance or a manifest path,
    validated exactly as the broker's loader does."""
    catalog = default_catalog()
    if isinstance(spec, str | Path):
        manifest = load_manifest_file(Path(spec), catalog)
        return Connector(manifest, ConnectorSource("file", str(spec)))
    if isinstance(spec, type) and issubclass(spec, Connector):
        raw = spec.MANIFEST  # type: ignore[attr-defined]
        raw = raw.model_dump() if hasattr(raw, "model_dump") else dict(raw)
        source = f"{spec.__module__}:{spec.__qualname__}"
        check_hook_signatures(spec, source)
        return spec(parse_manifest(raw, catalog, source=source), ConnectorSource("test", source))
    if isinstance(spec, Connector):
        check_hook_signatures(type(spec), "test")
        parse_manifest(spec.manifest.model_dump(), catalog, source="test")
        return spec
    raise TypeError(f"connector must be a Connector class, instance or manifest path: {spec!r}")


class ConnectorContract:
    connector: ClassVar[Any]
    settings: ClassVar[dict[str, str]] = {}
    action: ClassVar[str | None] = None
    example_payload: ClassVar[dict[str, Any]] = {}
    error_cases: ClassVar[list[ErrorCase]] = []
    constants: ClassVar[set[str]] = set()

    # -- what a subclass may override ---------------------------------------------------

    def install_api(self, provider: FakeProvider) -> None:
        """Make the fake answer like the real API (default: ``201 {"id": …}``)."""

    def token_response(self, tokens: IssuedTokens) -> dict[str, Any]:
        """The provider's token response for these tokens (default: RFC 6749)."""
        return standard_token_response(tokens)

    def provider_options(self) -> dict[str, Any]:
        """Extra :class:`FakeProvider` arguments (``unauthorized``, ``expires_in``…)."""
        return {}

    def derived_values(self, granted: dict[str, Any]) -> Iterable[str]:
        """Values the connector computes from granted ones (e.g. the day after a due
        date); they count as granted in the leak check."""
        return ()

    # -- plumbing -----------------------------------------------------------------------

    def make_connector(self) -> Connector:
        return load_connector(type(self).connector)

    def make_provider(self, connector: Connector) -> FakeProvider:
        provider = FakeProvider(
            connector.manifest,
            settings=dict(self.settings),
            token_response=self.token_response,
            **self.provider_options(),
        )
        self.install_api(provider)
        return provider

    def action_name(self, connector: Connector) -> str:
        assert connector.manifest.actions, "the connector declares no action"
        return self.action or connector.manifest.actions[0].name

    def source_files(self, connector: Connector) -> list[Path]:
        """Where the connector's constants come from: the broker's base ``Connector``
        (manifest-action delivery), a manifest file, or the plugin's package (its
        ``tests`` excluded)."""
        base = Path(inspect.getsourcefile(Connector) or "")
        if connector.source.kind == "file":
            return [base, Path(connector.source.location)]
        origin = inspect.getsourcefile(type(connector))
        if origin is None or type(connector) is Connector:
            return [base]
        root = Path(origin).parent
        return [base] + [
            p
            for p in sorted(root.rglob("*"))
            if p.suffix in (".py", ".toml") and "tests" not in p.relative_to(root).parts
        ]

    @pytest.fixture
    def harness(self) -> Iterator[BrokerHarness]:
        connector = self.make_connector()
        with BrokerHarness(connector, self.make_provider(connector)) as h:
            yield h

    # -- the contract -------------------------------------------------------------------

    def test_manifest_validates(self) -> None:
        connector = self.make_connector()
        parse_manifest(connector.manifest.model_dump(), default_catalog(), source="contract")
        assert connector.manifest.validate_settings(self.settings) is not None

    def test_policy_and_terms_links_are_https(self) -> None:
        manifest = self.make_connector().manifest
        for name in ("privacy_policy_url", "terms_url"):
            url = getattr(manifest, name)
            parts = urlsplit(url)
            assert parts.scheme == "https" and parts.hostname, f"{name}: {url!r} is not https"

    def test_every_category_is_in_the_catalog_with_a_purpose(self) -> None:
        catalog = default_catalog()
        for decl in self.make_connector().manifest.data:
            assert decl.category in catalog, decl.category
            assert len(decl.purpose.split()) >= 3, f"{decl.category}: say why, in a sentence"

    def test_example_payload_is_granted_by_the_declared_categories(self) -> None:
        connector = self.make_connector()
        declared = {d.category for d in connector.manifest.data}
        decision = check_scope(default_catalog(), self.example_payload, declared)
        assert decision.allowed, "example_payload has no field in a declared category"

    @hypothesis_settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        # one test per subclass: each contract class runs the same method on its own data
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(data=st.data())
    def test_sends_only_what_was_granted(self, data: st.DataObject) -> None:
        manifest = self.make_connector().manifest
        payload = data.draw(payload_strategy(self.example_payload), label="payload")
        optional = data.draw(st.sets(st.sampled_from(manifest.optional_categories or ("-",))))
        granted = set(manifest.required_categories) | (optional - {"-"})
        assume(check_scope(default_catalog(), payload, granted).allowed)
        self.check_sends_only_what_was_granted(payload, granted)

    def check_sends_only_what_was_granted(self, payload: dict[str, Any], granted: set[str]) -> None:
        """Deliver ``payload`` under a grant of ``granted`` categories; fail if any
        request carries something that is not granted, returned or constant."""
        connector = self.make_connector()
        manifest = connector.manifest
        decision = check_scope(default_catalog(), payload, granted)
        given_payload = drop_fields(payload, set(decision.field_paths))
        outside = drop_fields(payload, {f.path for f in decision.outside})
        provider = self.make_provider(connector)
        token = provider.issue()
        transport = EgressTransport(
            provider.transport,
            connector_id=connector.id,
            allowed=allowed_origins(manifest, self.settings),
            token=lambda: token.access_token,
            retry_delay=connector.retry_delay,
            sleep=lambda _s: None,
        )
        action = manifest.action(self.action_name(connector))
        assert action is not None
        outcome = dispatch(
            connector,
            connector.bind(action, self.settings),
            given_payload,
            transport,
            user_agent=_UA,
            http_timeout=5.0,
            time_limit=30.0,
        )
        assert outcome.delivered, f"delivery failed: {outcome.reason}"
        assert not transport.log.refused
        returned = [s for r in provider.responses for s in _response_strings(r)]
        explained = [
            *leaf_strings(given_payload),
            *self.settings.values(),
            *self.derived_values(given_payload),
            *returned,
        ]
        forbidden = [v for v in traceable_values(outside) if v not in explained]
        constants = vocabulary(
            self.source_files(connector),
            extra=[manifest.model_dump_json(), *self.constants],
        )
        problems = [
            problem
            for request in provider.requests
            for problem in unexplained(
                request_atoms(request, default_headers={"user-agent": _UA}),
                explained=explained,
                forbidden=forbidden,
                constants=constants,
            )
        ]
        assert not problems, "the connector sent what it was not given:\n" + "\n".join(problems)

    def test_delivers_end_to_end(self, harness: BrokerHarness) -> None:
        connection = harness.connect()
        transfer = harness.share(connection, self.example_payload, action=self.action)
        assert transfer["status"] == "delivered", transfer["reason"]
        assert transfer["payload_sha256"] and transfer["field_paths"]

    def test_provider_errors_become_failed_transfers(self, harness: BrokerHarness) -> None:
        cases = self.error_cases or [ErrorCase(400, {"message": "bad request"}, "bad request")]
        connection = harness.connect()
        connector = harness.connector
        action = connector.manifest.action(self.action_name(connector))
        assert action is not None
        bound = connector.bind(action, self.settings)
        for case in cases:
            body = case.body
            answer = (
                httpx.Response(case.status, text=body)
                if isinstance(body, str)
                else httpx.Response(case.status, json=body)
            )
            harness.provider.api(case.method or bound.method, case.url or bound.url, answer)
            transfer = harness.share(connection, self.example_payload, action=self.action)
            assert transfer["status"] == "failed", f"{case}: {transfer}"
            assert case.message in (transfer["reason"] or ""), (case, transfer["reason"])

    def test_revocation_reaches_the_provider(self, harness: BrokerHarness) -> None:
        connection = harness.connect()
        result = harness.revoke(connection)
        if harness.connector.manifest.oauth.revoke_url is None:
            assert result.get("provider") == "the provider has no revocation endpoint"
            return
        assert harness.provider.revocations, "the provider's revocation endpoint was not called"
        assert all(r["known"] == "True" for r in harness.provider.revocations)
        assert result and all(v in ("revoked", "already invalid") for v in result.values()), result
        assert not any(harness.provider.access_tokens.values()), "an access token still works"


def _response_strings(resp: httpx.Response) -> list[str]:
    try:
        body = resp.json()
    except ValueError:
        return []
    if isinstance(body, dict):
        return leaf_strings(body)
    return []
