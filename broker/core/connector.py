"""The connector plugin interface: a manifest plus optional hooks.

A manifest-only connector (a TOML file) is a ``Connector`` with no hooks
overridden: its ``deliver`` sends the granted payload as JSON to the action's
URL. A Python plugin subclasses ``Connector``, overrides the hooks it needs and
is published in the ``broker.connectors`` entry-point group; the entry point
names the subclass (with a ``MANIFEST``), an instance, or a manifest dict.

Hooks, all optional:

``authorize_params()``
    extra query parameters for the provider's authorize URL.
``check_connection(client, settings)``
    runs once after the code exchange, before the connection becomes active;
    raising refuses the connection (e.g. the repository does not exist).
``deliver(action, payload, client)``
    sends one granted payload. ``payload`` is a private deep copy of exactly what
    the user granted; ``client`` is an ``httpx.Client`` that reaches only the hosts
    the manifest declares, adds the bearer token itself, refreshes it on a 401 and
    retries 429/5xx answers. Return ``None`` or a :class:`DeliveryResult`; raise
    :class:`~broker.core.errors.DeliveryRejected` with the third party's message when
    it refuses, or :class:`~broker.core.errors.TokenRejected` when it refuses the
    token in a way that is not a 401 (the broker refreshes once and calls again).
``retry_delay(response, now)``
    seconds to wait before retrying an answer the broker would not retry by itself
    (e.g. GitHub's 403 rate limits), or ``None``.
``before_revoke(client, settings)``
    runs when the user revokes, before the tokens are revoked and destroyed.

A connector never receives the database, other connections, the refresh token
or (through these hooks) the access token.
"""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any

import httpx

from broker.core.errors import DeliveryRejected, HookSignatureInvalid
from broker.core.manifest import Action, Manifest, OAuthSettings
from broker.core.placeholders import render_url
from broker.core.scope import canonical_payload

__all__ = [
    "HOOKS",
    "BoundAction",
    "Connector",
    "ConnectorSource",
    "DeliveryResult",
    "check_hook_signatures",
    "packaged_manifest",
    "provider_message",
    "response_id",
]


@dataclass(frozen=True)
class ConnectorSource:
    """Where a connector came from: a manifest file or an installed distribution."""

    kind: str  # "file" | "entry_point" | "builtin"
    location: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}"


@dataclass(frozen=True)
class BoundAction:
    """A manifest action for one connection: its URL filled in with the settings."""

    name: str
    method: str
    url: str
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryResult:
    """What a ``deliver`` hook reports; ``response_id`` is kept with the transfer."""

    response_id: str | None = None


def packaged_manifest(package: str) -> dict[str, Any]:
    """The ``manifest.toml`` of the connector package ``package`` (e.g. ``"acme_chat"``;
    ship it as package data), as a dict; the broker validates it when it loads the
    connector."""
    text = (resources.files(package) / "manifest.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def provider_message(resp: httpx.Response) -> str:
    """``HTTP <status>`` plus the third party's own error text when its JSON has one
    (``error_description``, ``message``, ``error``, ``detail`` or ``description``)."""
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    if isinstance(body, dict):
        for key in ("error_description", "message", "error", "detail", "description"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return f"HTTP {resp.status_code}: {value[:300]}"
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return f"HTTP {resp.status_code}: {value['message'][:300]}"
    return f"HTTP {resp.status_code}"


def response_id(resp: httpx.Response, key: str = "id") -> str | None:
    """The ``id`` (string or number) of a JSON answer, if it has one."""
    try:
        body = resp.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        value = body.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)[:200]
    return None


@dataclass
class Connector:
    manifest: Manifest
    source: ConnectorSource = field(default_factory=lambda: ConnectorSource("builtin", "?"))

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def has_deliver_hook(self) -> bool:
        """True when a subclass replaced the manifest-action delivery with its own code."""
        return type(self).deliver is not Connector.deliver

    # -- hooks --------------------------------------------------------------------------

    def authorize_params(self) -> dict[str, str]:
        """Extra query parameters for the provider's authorize URL."""
        return dict(self.manifest.oauth.extra_authorize_params)

    def check_connection(self, client: httpx.Client, settings: Mapping[str, str]) -> None:
        """After the code exchange: raise to refuse the new connection."""

    def deliver(
        self, action: BoundAction, payload: dict[str, Any], client: httpx.Client
    ) -> DeliveryResult | None:
        """Manifest-action delivery: the granted payload as compact JSON to the action URL."""
        resp = client.request(
            action.method.upper(),
            action.url,
            content=canonical_payload(payload),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if 200 <= resp.status_code < 300:
            return DeliveryResult(response_id=response_id(resp))
        raise DeliveryRejected(provider_message(resp), details={"status": resp.status_code})

    def retry_delay(self, response: httpx.Response, now: datetime) -> float | None:
        """For a non-2xx answer: ``None`` (the broker's rule decides: 429 and 5xx are
        retried), or seconds to wait before retrying it (``0``: the broker's backoff).
        Capped at ``BROKER_RETRY_AFTER_MAX``."""
        return None

    def before_revoke(self, client: httpx.Client, settings: Mapping[str, str]) -> None:
        """Before the tokens are revoked at the provider and destroyed here."""

    # -- helpers the broker uses --------------------------------------------------------

    def bind(self, action: Action, settings: Mapping[str, str]) -> BoundAction:
        """``action`` for a connection with these settings; ``InvalidSetting`` (or its
        ``MissingSetting``) of :mod:`broker.core.errors` when a placeholder has no valid
        value."""
        return BoundAction(
            name=action.name,
            method=action.method.upper(),
            url=render_url(action.url, settings),
            settings=dict(settings),
        )

    def oauth_settings(self, values: Mapping[str, str]) -> OAuthSettings:
        """The ``[oauth]`` table with its URL placeholders filled in from ``values``
        (the connection's settings, plus ``client_id``)."""
        oauth = self.manifest.oauth
        update = {
            name: render_url(url, values)
            for name in ("authorize_url", "token_url", "revoke_url")
            if (url := getattr(oauth, name)) is not None
        }
        return oauth.model_copy(update=update)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.manifest.id,
            "name": self.manifest.name,
            "source": str(self.source),
            "privacy_policy_url": self.manifest.privacy_policy_url,
            "terms_url": self.manifest.terms_url,
            "categories": [d.category for d in self.manifest.data],
        }


HOOKS = ("authorize_params", "check_connection", "deliver", "retry_delay", "before_revoke")


def _shown(name: str, signature: inspect.Signature) -> str:
    """``deliver(self, action, payload, client)``: the parameters without annotations."""
    params = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return f"{name}{inspect.Signature(params)}"


def _fits(expected: inspect.Signature, found: inspect.Signature) -> bool:
    """Whether ``found`` takes the call the broker makes: the base class's parameters,
    by position. Each named parameter that receives one must carry its name (so
    swapped or renamed parameters are refused); ``*args``/``**kwargs`` may take them,
    and any further parameter needs a default."""
    wanted = list(expected.parameters)
    try:
        bound = found.bind(*wanted)  # each parameter receives its own expected name
    except TypeError:
        return False
    return all(
        found.parameters[name].kind is inspect.Parameter.VAR_POSITIONAL or value == name
        for name, value in bound.arguments.items()
    )


def check_hook_signatures(cls: type[Connector], source: str) -> None:
    """Refuse a connector class whose overridden hooks take other parameters than
    :class:`Connector`'s (checked when it loads, not when a user's transfer calls it)."""
    problems: list[str] = []
    for name in HOOKS:
        hook = inspect.getattr_static(cls, name)
        base = inspect.getattr_static(Connector, name)
        if hook is base:
            continue
        expected = inspect.signature(base)
        if not inspect.isfunction(hook):
            found = f"an attribute of type {type(hook).__name__}, not a method"
            problems.append(f"hook {name}: expected {_shown(name, expected)}, found {found}")
            continue
        signature = inspect.signature(hook)
        if not _fits(expected, signature):
            problems.append(
                f"hook {name}: expected {_shown(name, expected)}, found {_shown(name, signature)}"
            )
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise HookSignatureInvalid(
            f"{source}: connector {cls.__qualname__} overrides a hook with the wrong "
            f"parameters: {problems[0]}{more}",
            details={"source": source, "connector": cls.__qualname__, "problems": problems},
        )
