"""Configuration from ``BROKER_*`` environment variables.

One settings object; everything else receives plain values from it. With no
configuration at all the broker runs on its embedded default: a SQLite
database and a local key file under ``BROKER_HOME`` (default ``./.broker``).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.core import routes

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BROKER_", extra="ignore")

    home: Path = Field(default=Path(".broker"), description="where embedded data and keys live")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite under BROKER_HOME"
    )
    base_url: str | None = Field(default=None, description="public URL; default http://HOST:PORT")
    connectors_path: str = Field(
        default="", description="directories of manifest-only TOML connectors (os.pathsep)"
    )
    return_url_allowlist: str = Field(
        default="", description="comma-separated URL prefixes a connect may return to"
    )
    catalog: Path | None = Field(default=None, description="replacement catalog TOML file")
    keys_file: Path | None = Field(
        default=None, description="token-encryption key file; default BROKER_HOME/keys.json"
    )
    policy_version: str = Field(default="1", description="platform privacy policy version")
    policy_url: str | None = Field(default=None, description="platform privacy policy URL")
    connect_session_ttl: int = Field(default=600, ge=30, le=86400)
    oauth_state_ttl: int = Field(default=600, ge=30, le=3600)
    http_timeout: float = Field(default=10.0, gt=0, le=120)
    max_payload_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    delivery_max_attempts: int = Field(default=4, ge=1, le=10)
    delivery_backoff_base: float = Field(default=0.5, ge=0, le=60)
    delivery_backoff_max: float = Field(default=30.0, ge=0, le=600)
    retry_after_max: float = Field(default=60.0, ge=0, le=3600)
    token_refresh_skew: int = Field(default=30, ge=0, le=600)
    connector_timeout: float = Field(
        default=120.0, gt=0, le=3600, description="seconds a connector's Python hook may run"
    )
    reconcile_after: int = Field(
        default=300,
        ge=0,
        description="seconds before a pending transfer from before the delivery engine "
        "(no lease) counts as interrupted",
    )
    http_trust_env: bool = Field(
        default=False, description="let outgoing HTTP use proxy settings from the environment"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    signing_keys_file: Path | None = Field(
        default=None, description="checkpoint signing keys; default BROKER_HOME/signing-keys.json"
    )
    checkpoint_origin: str | None = Field(
        default=None,
        pattern=r"^[^\s+]+$",
        description="log name in checkpoints; default BASE_URL host + /audit-log",
    )
    checkpoint_every: int = Field(
        default=1000, ge=0, le=10_000_000, description="sign after this many entries; 0: never"
    )
    checkpoint_interval: float = Field(
        default=600.0, ge=0, le=86400, description="sign every this many seconds; 0: never"
    )
    checkpoint_witness_url: str | None = Field(
        default=None,
        description="deprecated (no standard witness accepts it): POST every signed "
        "checkpoint (text/plain) here; use BROKER_WITNESSES",
    )
    witnesses: str = Field(
        default="",
        description="C2SP tlog-witness witnesses, separated by commas or newlines, each "
        "'<submission URL> <witness verifier key (vkey, type 0x04)>'",
    )
    witness_quorum: int = Field(
        default=1,
        ge=1,
        le=64,
        description="a checkpoint counts as published once this many witnesses cosigned it",
    )
    policy_file: Path | None = Field(
        default=None, description="data-use policy TOML; default: the packaged policy"
    )
    workers: int = Field(
        default=4, ge=0, le=256, description="delivery worker threads in this process; 0: none"
    )
    processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="`broker serve` processes answering on the one socket, each with its "
        "own delivery workers (the API's CPU spread over cores)",
    )
    delivery_processes: int = Field(
        default=0,
        ge=0,
        le=64,
        description="`broker serve` also starts this many `broker worker` processes",
    )
    transfer_wait: float = Field(
        default=30.0, ge=0, le=600, description="seconds a transfer request waits for its outcome"
    )
    lease_seconds: float = Field(
        default=60.0, ge=1, le=3600, description="a worker's lease on a transfer it delivers"
    )
    worker_poll: float = Field(
        default=1.0, gt=0, le=60, description="seconds between a worker's looks for due transfers"
    )
    webhook_max_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="a webhook endpoint is disabled after this many deliveries in a row "
        "failed for good (each after its retries, up to 3 days)",
    )
    retry_hold_max: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="a retry wait up to this is held by the worker; longer ones are rescheduled",
    )
    token_refresh_timeout: float = Field(
        default=30.0, gt=0, le=300, description="seconds a token refresh may take at the provider"
    )
    metrics_token: str | None = Field(
        default=None, min_length=16, description="bearer token for GET /metrics besides admin keys"
    )
    receipt_keys_file: Path | None = Field(
        default=None,
        description="consent-receipt signing keys; default BROKER_HOME/receipt-keys.json",
    )
    user_session_ttl: int = Field(
        default=1800, ge=60, le=86400, description="seconds a /me browser session lasts"
    )
    console_session_ttl: int = Field(
        default=14400, ge=60, le=7 * 86400, description="seconds an /audit console session lasts"
    )
    console_login_limit_per_address: str = Field(
        default="10/minute;50/hour",
        description="console sign-in attempts allowed per client address (limits syntax)",
    )
    console_login_limit_per_key: str = Field(
        default="5/minute;20/hour",
        description="console sign-ins allowed per API key id (limits syntax)",
    )
    rate_limit_storage: str = Field(
        default="memory",
        pattern=r"^(memory|database)$",
        description="where sign-in counters live: memory (one process) or database (several)",
    )
    platform_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="the host platform's name, shown in the pages' header and on the consent "
        "page; unset, the header says 'Integrations' and the page 'the platform account'",
    )
    confirm_ttl: int = Field(
        default=3600,
        ge=60,
        le=7 * 86400,
        description="seconds a pending_confirmation connection waits for the host's confirm",
    )
    shared_callback_connectors: str = Field(
        default="",
        description="comma-separated connector ids kept on the shared /oauth/callback",
    )
    policy_check_interval: int = Field(
        default=86400,
        ge=0,
        le=30 * 86400,
        description="seconds between checks of the third parties' policy and terms pages "
        "(broker serve, and how old a snapshot the consent page accepts); 0: serve does "
        "not check on its own",
    )
    policy_change_threshold: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="share of a policy page's words that must change for the change to "
        "count as significant (smaller changes are minor)",
    )
    policy_fetch_timeout: float = Field(
        default=5.0, gt=0, le=60, description="seconds a policy page fetch may take in all"
    )
    policy_page_wait: float = Field(
        default=2.0,
        ge=0,
        le=30,
        description="seconds the consent page waits for a policy fetch before it renders "
        "with what the broker already has",
    )
    policy_max_bytes: int = Field(
        default=2_097_152, ge=1024, le=16 * 1_048_576, description="largest policy page read"
    )
    connect_origins: str = Field(
        default="",
        description="comma-separated origins (https://app.example.com) of host pages that "
        "open connect links with broker-connect.js in a popup: the finished page posts the "
        "outcome to its opener only at these origins; empty: no popup outcome is posted",
    )
    objectable_uses: str = Field(
        default="",
        description="comma-separated data-use keys a user may object to besides marketing "
        "(GDPR Art. 21); each covers the keys below it",
    )

    @field_validator("return_url_allowlist", "connectors_path")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("connect_origins")
    @classmethod
    def _connect_origins(cls, value: str) -> str:
        from broker.core.urls import origin

        bad = [o for o in _listed(value) if origin(o) != o]
        if bad:
            raise ValueError(
                "not an origin (scheme://host[:port], https or loopback http, nothing "
                f"after it): {', '.join(bad)}"
            )
        return value.strip()

    @field_validator("objectable_uses")
    @classmethod
    def _objectable_uses(cls, value: str) -> str:
        from broker.core.policy import is_data_use

        unknown = [p.strip() for p in value.split(",") if p.strip() and not is_data_use(p.strip())]
        if unknown:
            raise ValueError(f"not a known data-use key: {', '.join(unknown)}")
        return value.strip()

    @field_validator("witnesses")
    @classmethod
    def _witnesses(cls, value: str) -> str:
        from broker.core.errors import InvalidInput
        from broker.core.witness import parse_witnesses

        try:
            parse_witnesses(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return value.strip()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'broker.db').resolve()}"

    @property
    def is_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def resolved_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def callback_url(self) -> str:
        """The shared callback, kept for redirect URIs registered before per-connector ones."""
        return self.resolved_base_url + routes.OAUTH_CALLBACK

    def connector_callback_url(self, connector_id: str) -> str:
        """The connector's own callback (RFC 9700 §4.4.2: one redirect URI per provider)."""
        return self.resolved_base_url + routes.OAUTH_CALLBACK_FOR.format(connector_id=connector_id)

    @property
    def shared_callback_ids(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.shared_callback_connectors.split(",") if p.strip())

    @property
    def objectable_use_keys(self) -> tuple[str, ...]:
        """The uses a user may object to: ``marketing`` and BROKER_OBJECTABLE_USES."""
        extra = (p.strip() for p in self.objectable_uses.split(","))
        return tuple(dict.fromkeys(["marketing", *(p for p in extra if p)]))

    @property
    def resolved_keys_file(self) -> Path:
        return self.keys_file or self.home / "keys.json"

    @property
    def audit_head_file(self) -> Path:
        return self.home / "audit.head"

    @property
    def resolved_signing_keys_file(self) -> Path:
        return self.signing_keys_file or self.home / "signing-keys.json"

    @property
    def resolved_receipt_keys_file(self) -> Path:
        return self.receipt_keys_file or self.home / "receipt-keys.json"

    @property
    def resolved_receipt_key_name(self) -> str:
        """The name receipts are signed as (distinct from the checkpoint origin)."""
        host = urlsplit(self.resolved_base_url).hostname or "localhost"
        return f"{host}/consent-receipts"

    @property
    def checkpoints_file(self) -> Path:
        return self.home / "checkpoints"

    @property
    def resolved_checkpoint_origin(self) -> str:
        if self.checkpoint_origin:
            return self.checkpoint_origin
        host = urlsplit(self.resolved_base_url).hostname or "localhost"
        return f"{host}/audit-log"

    @property
    def connector_dirs(self) -> list[Path]:
        return [Path(p) for p in self.connectors_path.split(os.pathsep) if p.strip()]

    @property
    def return_url_prefixes(self) -> list[str]:
        return [p.strip() for p in self.return_url_allowlist.split(",") if p.strip()]

    @property
    def connect_origin_list(self) -> tuple[str, ...]:
        """``BROKER_CONNECT_ORIGINS``: where a popup's finished page posts its outcome."""
        return tuple(_listed(self.connect_origins))


def _listed(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]
