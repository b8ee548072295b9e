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
        default=300, ge=0, description="seconds before a pending transfer counts as interrupted"
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
        default=None, description="POST every signed checkpoint (text/plain) here"
    )
    policy_file: Path | None = Field(
        default=None, description="data-use policy TOML; default: the packaged policy"
    )

    @field_validator("return_url_allowlist", "connectors_path")
    @classmethod
    def _strip(cls, value: str) -> str:
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
        return f"{self.resolved_base_url}/oauth/callback"

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
