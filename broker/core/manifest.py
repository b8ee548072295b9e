"""Connector manifests: what a third party receives, why, and how to reach it.

A manifest is parsed in two passes, as the plugin guides we follow do: first
by shape (pydantic), then by meaning against the catalog (every category
exists, URLs are https or loopback http, secrets are ``env:`` references,
no duplicates). Every problem names the source, the field and what is wrong;
all problems are reported at once in ``ManifestError.details["problems"]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from broker.core.catalog import Catalog
from broker.core.errors import ConfigurationError, ManifestError
from broker.core.urls import url_problem

__all__ = [
    "Action",
    "DataDeclaration",
    "Manifest",
    "OAuthSettings",
    "load_manifest_file",
    "parse_manifest",
    "resolve_secret",
]

ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{1,62}$")
SECRET_REF = re.compile(r"^env:[A-Za-z_][A-Za-z0-9_]*$")
HTTP_METHODS = ("POST", "PUT", "PATCH")
# Set by the broker on every authorize URL; a manifest may not override them.
RESERVED_AUTHORIZE_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    }
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OAuthSettings(_Strict):
    authorize_url: str
    token_url: str
    revoke_url: str | None = None
    scopes: tuple[str, ...] = ()
    client_id: str
    client_secret: str
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = (
        "client_secret_basic"
    )
    extra_authorize_params: dict[str, str] = Field(default_factory=dict)


class DataDeclaration(_Strict):
    category: str
    purpose: str = Field(min_length=3, max_length=500)
    required: bool = True


class Action(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    method: str = "POST"
    url: str
    description: str | None = None


class Manifest(_Strict):
    id: str
    name: str = Field(min_length=1, max_length=120)
    description: str | None = None
    logo_url: str | None = None
    privacy_policy_url: str
    terms_url: str
    oauth: OAuthSettings
    data: tuple[DataDeclaration, ...] = Field(min_length=1)
    actions: tuple[Action, ...] = ()

    def declaration(self, category: str) -> DataDeclaration | None:
        return next((d for d in self.data if d.category == category), None)

    @property
    def required_categories(self) -> tuple[str, ...]:
        return tuple(d.category for d in self.data if d.required)

    @property
    def optional_categories(self) -> tuple[str, ...]:
        return tuple(d.category for d in self.data if not d.required)

    def action(self, name: str) -> Action | None:
        return next((a for a in self.actions if a.name == name), None)

    def digest(self) -> str:
        """SHA-256 of the manifest as shown to users; consent records keep it."""
        encoded = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(encoded.encode()).hexdigest()

    def public_dict(self) -> dict[str, Any]:
        """What the API shows: everything but the OAuth client credentials."""
        data = self.model_dump(mode="json")
        data["oauth"] = {
            k: v for k, v in data["oauth"].items() if k not in ("client_id", "client_secret")
        }
        return data


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(manifest)"


def _meaning_problems(manifest: Manifest, catalog: Catalog) -> list[str]:
    problems: list[str] = []
    if not ID_PATTERN.fullmatch(manifest.id):
        problems.append(
            f"id: {manifest.id!r} must be lowercase letters, digits, '-' or '_', "
            "starting with a letter (2-63 characters)"
        )
    urls = {
        "privacy_policy_url": manifest.privacy_policy_url,
        "terms_url": manifest.terms_url,
        "logo_url": manifest.logo_url,
        "oauth.authorize_url": manifest.oauth.authorize_url,
        "oauth.token_url": manifest.oauth.token_url,
        "oauth.revoke_url": manifest.oauth.revoke_url,
    }
    urls.update({f"actions[{i}].url": a.url for i, a in enumerate(manifest.actions)})
    for field, url in urls.items():
        if url is None:
            continue
        if not url.strip():
            problems.append(f"{field}: must not be empty")
        elif problem := url_problem(url):
            problems.append(f"{field}: {problem}")
    for field in ("client_id", "client_secret"):
        value = getattr(manifest.oauth, field)
        if not SECRET_REF.fullmatch(value):
            problems.append(
                f"oauth.{field}: must be a reference like 'env:EXAMPLE_CLIENT_ID', "
                "never an inline value"
            )
    for name in sorted(RESERVED_AUTHORIZE_PARAMS & set(manifest.oauth.extra_authorize_params)):
        problems.append(
            f"oauth.extra_authorize_params.{name}: is set by the broker and cannot be overridden"
        )
    seen: set[str] = set()
    for i, decl in enumerate(manifest.data):
        if decl.category in seen:
            problems.append(f"data[{i}].category: {decl.category!r} is declared twice")
        seen.add(decl.category)
        if decl.category not in catalog:
            problems.append(f"data[{i}].category: {decl.category!r} is not in the catalog")
    names: set[str] = set()
    for i, action in enumerate(manifest.actions):
        if action.name in names:
            problems.append(f"actions[{i}].name: {action.name!r} is declared twice")
        names.add(action.name)
        if action.method.upper() not in HTTP_METHODS:
            problems.append(
                f"actions[{i}].method: {action.method!r} must be one of {', '.join(HTTP_METHODS)}"
            )
    return problems


def parse_manifest(raw: dict[str, Any], catalog: Catalog, *, source: str) -> Manifest:
    """Validate a manifest mapping by shape, then by meaning; raise ManifestError."""
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] == "missing":
                msg = "is required"
            elif err["type"] == "extra_forbidden":
                msg = "is not a manifest field"
            problems.append(f"{_location(err['loc'])}: {msg}")
        raise ManifestError(
            f"{source}: invalid manifest", details={"source": source, "problems": problems}
        ) from None
    problems = _meaning_problems(manifest, catalog)
    if problems:
        raise ManifestError(
            f"{source}: invalid manifest", details={"source": source, "problems": problems}
        )
    return manifest


def load_manifest_file(path: Path, catalog: Catalog) -> Manifest:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(
            f"{path}: cannot read manifest",
            details={"source": str(path), "problems": [f"(file): {exc.strerror}"]},
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"{path}: not valid TOML",
            details={"source": str(path), "problems": [f"(file): {exc}"]},
        ) from None
    return parse_manifest(raw, catalog, source=str(path))


def resolve_secret(reference: str, *, connector_id: str, field: str) -> str:
    """The value behind an ``env:NAME`` reference; a clear error when unset."""
    name = reference.removeprefix("env:")
    value = os.environ.get(name)
    if not value:
        raise ConfigurationError(
            f"connector {connector_id!r}: oauth.{field} refers to environment variable "
            f"{name}, which is not set",
            details={"connector": connector_id, "field": f"oauth.{field}", "variable": name},
        )
    return value
