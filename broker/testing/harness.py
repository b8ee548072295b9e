"""A real broker (SQLite in a temporary directory) wired to a :class:`FakeProvider`.

``BrokerHarness`` runs the broker's own flows, not imitations of them: connect
(session, consent approval, the fake provider's authorize page, the callback),
share (scope check, pending record, delivery through the connector, outcome)
and revoke. Backoff waits are recorded in ``harness.waits``, never slept.

What a connector's tests ask of the broker's state goes through the harness too
(``begin_connect``, ``stored``), so they import ``broker.connector`` and
``broker.testing`` only, never the broker's store or flows.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from broker.core.catalog import default_catalog
from broker.core.connector import Connector
from broker.core.errors import BrokerError
from broker.core.gateway import TransferRequest
from broker.flows.approve import approve
from broker.flows.callback import complete_callback
from broker.flows.connect import create_connect_session
from broker.flows.revoke import revoke_connection
from broker.flows.share import transfer_dict
from broker.flows.submit import create_transfer
from broker.runtime import Runtime, build_runtime
from broker.settings import Settings
from broker.testing.fake_provider import FakeProvider

__all__ = ["BrokerHarness", "StoredConnection"]


@dataclass(frozen=True)
class StoredConnection:
    """What the broker keeps for one connection, as a connector's test may check it:
    never the tokens themselves, only whether each is held."""

    id: str
    connector_id: str
    user_id: str
    status: str
    settings: dict[str, str]
    last_error: str | None
    has_access_token: bool
    has_refresh_token: bool


class _ByHost(httpx.BaseTransport):
    """Several fake providers behind one transport, each answering for its hosts."""

    def __init__(self, providers: list[FakeProvider]) -> None:
        self.providers = providers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for provider in self.providers:
            if request.url.host in provider.hosts:
                return provider.transport.handle_request(request)
        return self.providers[0].transport.handle_request(request)  # respx refuses it


BASE_URL = "http://127.0.0.1:8765"


class BrokerHarness:
    def __init__(
        self,
        connector: Connector,
        provider: FakeProvider,
        *,
        home: Path | None = None,
        settings: Mapping[str, str] | None = None,
        database_url: str | None = None,
        others: Iterable[tuple[Connector, FakeProvider]] = (),
    ) -> None:
        self.connector = connector
        self.provider = provider
        self.others = {c.id: (c, p) for c, p in others}
        self.settings = dict(settings if settings is not None else provider.settings)
        self._tmp = (
            None if home is not None else tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        )
        home = home or Path(self._tmp.name)  # type: ignore[union-attr]
        self._env: dict[str, str | None] = {}
        for c, p in [(connector, provider), *self.others.values()]:
            self._setenv(c.manifest.oauth.client_id.removeprefix("env:"), p.client_id)
            self._setenv(c.manifest.oauth.client_secret.removeprefix("env:"), p.client_secret)
        self.waits: list[float] = []
        # Backoff is recorded, not slept, so the time limit must not count it, and
        # waits up to 10 minutes are held in place (a share() sees its whole retry).
        values: dict[str, Any] = {
            "home": home / "broker",
            "base_url": BASE_URL,
            "connector_timeout": 3600,
            "retry_hold_max": 600,
        }
        if database_url:
            values["database_url"] = database_url
        self.rt: Runtime = build_runtime(
            Settings(**values),
            builtins=[connector, *(c for c, _p in self.others.values())],
            plugins=[],
            transport=_ByHost([provider, *(p for _c, p in self.others.values())]),
            upgrade=True,
        )
        self.rt.sleep = self.waits.append

    def _setenv(self, name: str, value: str) -> None:
        self._env.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def close(self) -> None:
        self.rt.close()
        for name, old in self._env.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> BrokerHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- flows --------------------------------------------------------------------------

    def connect(
        self,
        user_id: str = "user-1",
        optional: Iterable[str] | None = None,
        *,
        connector_id: str | None = None,
    ) -> str:
        """Connect through the broker's flow; every optional category by default.
        Returns the connection id (raises ``AssertionError`` with the reason if not)."""
        connector, provider, settings = self.connector, self.provider, self.settings
        if connector_id is not None and connector_id != connector.id:
            connector, provider = self.others[connector_id]
            settings = dict(provider.settings)
        manifest = connector.manifest
        chosen = manifest.optional_categories if optional is None else tuple(optional)
        url = self.begin_connect(user_id, settings=settings, connector_id=connector.id)
        token = parse_qs(urlsplit(url).query)["session"][0]
        approval = approve(
            self.rt,
            token=token,
            connector_id=connector.id,
            optional_granted=chosen,
            client_ip="127.0.0.1",
            user_agent="broker.testing",
        )
        answer = urlsplit(provider.authorize(approval.authorize_url))
        back = parse_qs(answer.query)
        outcome = complete_callback(
            self.rt,
            state=back["state"][0],
            code=back.get("code", [None])[0],
            error=back.get("error", [None])[0],
            # the browser that approved: the callback it reached and its cookie's nonce
            redirect_uri=answer._replace(query="", fragment="").geturl(),
            browser_nonces=[approval.browser_nonce],
            iss=back.get("iss", [None])[0],
        )
        assert outcome.ok and outcome.connection_id, outcome.message
        return outcome.connection_id

    def begin_connect(
        self,
        user_id: str = "user-1",
        *,
        settings: Mapping[str, str] | None = None,
        connector_id: str | None = None,
    ) -> str:
        """The host's first step of connect (``POST /v1/connect-sessions``): returns the
        connect link's URL. ``settings`` default to the harness's; a value the manifest's
        ``[[settings]]`` refuse raises ``InvalidInput`` naming ``settings.NAME``, as the
        API answers ``422``."""
        return create_connect_session(
            self.rt,
            user_id=user_id,
            connector_id=connector_id or self.connector.id,
            settings=self.settings if settings is None else settings,
        ).url

    def stored(self, connection_id: str) -> StoredConnection:
        """What the broker stored for ``connection_id`` (raises ``AssertionError`` if
        there is no such connection)."""
        from sqlmodel import Session

        from broker.store.models import Connection, ConnectionToken

        with Session(self.rt.engine) as session:
            conn = session.get(Connection, connection_id)
            assert conn is not None, f"no connection {connection_id}"
            tokens = session.get(ConnectionToken, connection_id)
        return StoredConnection(
            id=conn.id,
            connector_id=conn.connector_id,
            user_id=conn.user_id,
            status=conn.status,
            settings=dict(conn.settings or {}),
            last_error=conn.last_error,
            has_access_token=tokens is not None and bool(tokens.access_token),
            has_refresh_token=tokens is not None and tokens.refresh_token is not None,
        )

    def share(
        self,
        connection_id: str,
        data: dict[str, Any],
        *,
        action: str | None = None,
        mode: str = "drop",
    ) -> dict[str, Any]:
        """One transfer; returns the transfer (delivered, failed or blocked) as a dict."""
        if action is None:
            connector = self.rt.registry.get(self._connector_of(connection_id))
            action = connector.manifest.actions[0].name
        request = TransferRequest(action=action, data=data, mode=mode)
        try:
            transfer, _new = create_transfer(
                self.rt, connection_id=connection_id, request=request, actor="broker.testing"
            )
        except BrokerError as exc:
            recorded: dict[str, Any] | None = exc.details.get("transfer")
            if recorded is None:
                raise
            return recorded
        return transfer_dict(transfer)

    def _connector_of(self, connection_id: str) -> str:
        return self.stored(connection_id).connector_id

    def revoke(self, connection_id: str) -> dict[str, str]:
        outcome: dict[str, str] = revoke_connection(self.rt, connection_id, actor="broker.testing")[
            "provider_revocation"
        ]
        return outcome

    @classmethod
    def for_connector(
        cls, connector: Connector, *, settings: Mapping[str, str] | None = None, **provider: Any
    ) -> BrokerHarness:
        fake = FakeProvider(connector.manifest, settings=dict(settings or {}), **provider)
        return cls(connector, fake)

    @staticmethod
    def catalog_keys() -> frozenset[str]:
        return frozenset(c.key for c in default_catalog().categories)
