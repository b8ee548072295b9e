"""A connector whose hook takes other parameters than the hook's own is refused when it
loads (by the registry and by the test kit), with a message naming the connector, the
hook, the expected and the found signature; a hook that fits, extras with defaults
included, loads."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint
from typing import Any

import httpx
import pytest

from broker.connector import BoundAction, Connector, DeliveryResult
from broker.core.catalog import default_catalog
from broker.core.connector import HOOKS, check_hook_signatures
from broker.core.errors import HookSignatureInvalid, ManifestError
from broker.core.manifest import Manifest
from broker.core.registry import ENTRY_POINT_GROUP, load_registry
from broker.testing import load_connector
from tests.unit.core.test_registry import manifest_dict

DELIVER = "deliver(self, action, payload, client)"


class SwappedDeliver(Connector):
    MANIFEST = manifest_dict("swapped")

    def deliver(self, payload: dict[str, Any], action: BoundAction, client: httpx.Client) -> None:
        return None


class MissingClient(Connector):
    MANIFEST = manifest_dict("missing")

    def deliver(self, action: BoundAction, payload: dict[str, Any]) -> None:
        return None


class TwoWrongHooks(Connector):
    MANIFEST = manifest_dict("twowrong")

    def check_connection(self, client: httpx.Client) -> None:
        return None

    def before_revoke(self, client: httpx.Client, settings: Mapping[str, str], why: str) -> None:
        return None


class NotAMethod(Connector):
    MANIFEST = manifest_dict("notamethod")
    retry_delay = 5  # type: ignore[assignment]


class Fitting(Connector):
    """Same names and order; an extra parameter with a default and ``**kwargs`` are fine."""

    MANIFEST = manifest_dict("fitting")

    def deliver(
        self,
        action: BoundAction,
        payload: dict[str, Any],
        client: httpx.Client,
        dry_run: bool = False,
        **extra: Any,
    ) -> DeliveryResult | None:
        return None

    def authorize_params(self) -> dict[str, str]:
        return {"prompt": "consent"}


class Passthrough(Connector):
    """A wrapper-style hook that takes everything through ``*args``: the call binds."""

    MANIFEST = manifest_dict("passthrough")

    def before_revoke(self, *args: Any, **kwargs: Any) -> None:
        return None


class KeywordOnly(Connector):
    MANIFEST = manifest_dict("keywordonly")

    def retry_delay(self, response: httpx.Response, now: Any, *, cap: float) -> float | None:
        return None


MISSING_INSTANCE = MissingClient(Manifest.model_validate(manifest_dict("missinginst")))


def ep(attr: str) -> EntryPoint:
    return EntryPoint(attr.lower(), f"{__name__}:{attr}", ENTRY_POINT_GROUP)


def test_every_hook_of_the_base_class_is_checked() -> None:
    assert set(HOOKS) == {
        "authorize_params",
        "check_connection",
        "deliver",
        "retry_delay",
        "before_revoke",
    }
    check_hook_signatures(Connector, "builtin")  # the base class fits itself


def test_swapped_parameters_are_refused_naming_connector_hook_and_both_signatures() -> None:
    with pytest.raises(HookSignatureInvalid) as caught:
        check_hook_signatures(SwappedDeliver, "entry_point:acme")
    err = caught.value
    assert isinstance(err, ManifestError)  # the loader's existing refusal path
    assert err.code == "hook_signature_invalid"
    assert err.message == (
        "entry_point:acme: connector SwappedDeliver overrides a hook with the wrong "
        f"parameters: hook deliver: expected {DELIVER}, "
        "found deliver(self, payload, action, client)"
    )
    assert err.details["connector"] == "SwappedDeliver"
    assert err.details["source"] == "entry_point:acme"


def test_each_wrong_hook_is_listed() -> None:
    with pytest.raises(HookSignatureInvalid) as caught:
        check_hook_signatures(TwoWrongHooks, "test")
    assert caught.value.details["problems"] == [
        "hook check_connection: expected check_connection(self, client, settings), "
        "found check_connection(self, client)",
        "hook before_revoke: expected before_revoke(self, client, settings), "
        "found before_revoke(self, client, settings, why)",
    ]
    assert "(and 1 more)" in caught.value.message


def test_an_attribute_in_place_of_a_hook_is_refused() -> None:
    with pytest.raises(
        HookSignatureInvalid,
        match=r"hook retry_delay: expected "
        r"retry_delay\(self, response, now\), found an attribute of type int, not a method",
    ):
        check_hook_signatures(NotAMethod, "test")


def test_a_required_keyword_only_parameter_is_refused() -> None:
    with pytest.raises(
        HookSignatureInvalid, match=r"found retry_delay\(self, response, now, \*, cap\)"
    ):
        check_hook_signatures(KeywordOnly, "test")


def test_fitting_hooks_load() -> None:
    registry = load_registry(default_catalog(), plugins=[ep("Fitting"), ep("Passthrough")])
    assert registry.problems == []
    assert registry.get("fitting").has_deliver_hook
    assert "passthrough" in registry


@pytest.mark.parametrize("attr", ["MissingClient", "MISSING_INSTANCE"])
def test_the_registry_refuses_a_wrong_hook_and_keeps_the_others(attr: str) -> None:
    registry = load_registry(default_catalog(), plugins=[ep(attr), ep("Fitting")])
    assert set(registry.connectors) == {"fitting"}
    (problem,) = registry.problems
    assert f"({attr.lower()} = {__name__}:{attr})" in problem.source
    assert "connector MissingClient overrides a hook" in problem.message
    assert problem.problems == (
        f"hook deliver: expected {DELIVER}, found deliver(self, action, payload)",
    )


def test_the_test_kit_refuses_it_as_the_broker_does() -> None:
    with pytest.raises(HookSignatureInvalid, match="found deliver\\(self, payload, action"):
        load_connector(SwappedDeliver)
    with pytest.raises(HookSignatureInvalid, match="connector MissingClient"):
        load_connector(MISSING_INSTANCE)
    assert load_connector(Fitting).id == "fitting"
