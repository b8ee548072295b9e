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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from broker.core.catalog import Catalog
from broker.core.errors import ConfigurationError, InvalidInput, ManifestError
from broker.core.placeholders import (
    BUILTIN_PLACEHOLDERS,
    host_label_problem,
    host_placeholders,
    placeholder_problem,
    sample_url,
)
from broker.core.policy import DEFAULT_USE, is_data_use
from broker.core.urls import url_problem

__all__ = [
    "Action",
    "DataDeclaration",
    "DeliverySettings",
    "Manifest",
    "OAuthSettings",
    "Setting",
    "load_manifest_file",
    "parse_manifest",
    "resolve_secret",
]

ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{1,62}$")
SECRET_REF = re.compile(r"^env:[A-Za-z_][A-Za-z0-9_]*$")
HTTP_METHODS = ("POST", "PUT", "PATCH")
_HOST_ENTRY = re.compile(r"^[A-Za-z0-9.{}_-]+(:[0-9]{1,5})?$")
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
    # What the token endpoint says in ``token_type`` (Slack says "bot"); tokens are
    # always sent as ``Authorization: Bearer``.
    token_type: str = Field(default="bearer", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,30}$")
    revocation: Literal["rfc7009", "bearer", "client_json"] = "rfc7009"
    revoke_method: Literal["POST", "DELETE"] = "POST"
    # RFC 9207 / RFC 9700 §4.4 (mix-up): the authorization server's issuer identifier,
    # checked against ``iss`` in its authorization response; with the flag set, a
    # response without ``iss`` is refused.
    issuer: str | None = Field(default=None, min_length=1, max_length=500)
    authorization_response_iss_parameter_supported: bool = False
    # Which redirect URI the broker sends: the connector's own
    # (BASE_URL/oauth/callback/{id}) or the shared BASE_URL/oauth/callback.
    redirect: Literal["per_connector", "shared"] = "per_connector"

    @model_validator(mode="after")
    def _issuer_rules(self) -> OAuthSettings:
        if self.issuer is not None:
            if problem := url_problem(sample_url(self.issuer)):
                raise ValueError(f"issuer: {problem}")
            if "?" in self.issuer or "#" in self.issuer:
                raise ValueError("issuer: must not carry a query or fragment (RFC 9207)")
        elif self.authorization_response_iss_parameter_supported:
            raise ValueError("authorization_response_iss_parameter_supported needs oauth.issuer")
        return self


class DataDeclaration(_Strict):
    category: str
    purpose: str = Field(min_length=3, max_length=500)
    required: bool = True
    use: str = DEFAULT_USE  # a fideslang data-use key (broker/core/data/data_uses.toml)


class Setting(_Strict):
    """A per-connection value the host application supplies (e.g. a Zendesk subdomain)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    label: str = Field(min_length=1, max_length=120)
    pattern: str = Field(min_length=1, max_length=500)
    description: str | None = None
    required: bool = True
    default: str | None = None
    example: str | None = None


class DeliverySettings(_Strict):
    """How the delivery engine treats this third party (``[delivery]``).

    ``idempotent``: the third party honours the idempotency header, so a delivery
    whose worker stopped mid-flight is sent again under the same key; otherwise it
    ends ``outcome_unknown``. ``idempotency_header`` names the header that carries
    the transfer id on every attempt (empty: none is sent). ``max_in_flight`` bounds
    concurrent deliveries to this connector per worker process; ``rate_limit``
    (``"100/minute"``) bounds how often they start, counted in the database so every
    process shares it; ``ordered`` delivers each connection's transfers one at a
    time, oldest first."""

    idempotent: bool = False
    idempotency_header: str = Field(default="Idempotency-Key", pattern=r"^([A-Za-z0-9-]{1,64})?$")
    max_in_flight: int | None = Field(default=None, ge=1, le=1000)
    rate_limit: str | None = Field(
        default=None, pattern=r"^[1-9][0-9]{0,6}/(second|minute|hour|day)$"
    )
    ordered: bool = False


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
    settings: tuple[Setting, ...] = ()
    hosts: tuple[str, ...] = ()
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)

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

    def validate_settings(self, values: Any) -> dict[str, str]:
        """A connection's settings checked against the declarations, defaults filled in;
        ``InvalidInput`` names the first setting that is missing, unknown or invalid."""
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise InvalidInput("settings must be a JSON object", details={"field": "settings"})
        declared = {s.name: s for s in self.settings}
        for name in values:
            if name not in declared:
                raise InvalidInput(
                    f"settings.{name}: {self.name} has no such setting",
                    details={"field": f"settings.{name}", "settings": sorted(declared)},
                )
        out: dict[str, str] = {}
        for setting in self.settings:
            value = values.get(setting.name, setting.default)
            field = f"settings.{setting.name}"
            if value is None:
                if setting.required:
                    raise InvalidInput(
                        f"{field}: is required ({setting.label})", details={"field": field}
                    )
                continue
            if not isinstance(value, str) or not re.fullmatch(setting.pattern, value):
                raise InvalidInput(
                    f"{field}: {value!r} is not a valid {setting.label} "
                    f"(must match {setting.pattern})",
                    details={"field": field, "pattern": setting.pattern},
                )
            if setting.name in self.host_settings and (problem := host_label_problem(value)):
                raise InvalidInput(
                    f"{field}: {value!r} cannot stand in a host name: {problem}",
                    details={"field": field},
                )
            out[setting.name] = value
        return out

    def url_templates(self) -> dict[str, str]:
        """Every URL that may carry placeholders, by field (``hosts`` as https URLs)."""
        oauth = self.oauth
        urls = {
            f"oauth.{name}": url
            for name in ("authorize_url", "token_url", "revoke_url")
            if (url := getattr(oauth, name)) is not None
        }
        urls.update({f"actions[{i}].url": a.url for i, a in enumerate(self.actions)})
        urls.update({f"hosts[{i}]": f"https://{h}/" for i, h in enumerate(self.hosts)})
        return urls

    @property
    def host_settings(self) -> frozenset[str]:
        """The settings that fill a host name label in some URL."""
        return frozenset(
            name for url in self.url_templates().values() for name in host_placeholders(url)
        )

    def digest(self) -> str:
        """SHA-256 of the manifest as shown to users; consent records keep it."""
        # [delivery] is how the broker sends, not what the user agrees to: left out.
        shown = self.model_dump(mode="json", exclude={"delivery"})
        encoded = json.dumps(shown, sort_keys=True, separators=(",", ":"))
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


def _template_problem(url: str, declared: set[str] | None) -> str | None:
    """Why a manifest URL (a template when ``declared`` names its settings) is not
    acceptable: its placeholders, then its scheme, host and port as the URL rules see
    it with sample values filled in (named by the template, not the sample)."""
    if declared is not None and (problem := placeholder_problem(url, declared)):
        return problem
    sample = sample_url(url)
    problem = url_problem(sample)
    return problem.replace(repr(sample), repr(url), 1) if problem else None


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
    urls.update({f"hosts[{i}]": f"https://{h}/" for i, h in enumerate(manifest.hosts)})
    declared = {s.name for s in manifest.settings}
    for field, url in urls.items():
        if url is None:
            continue
        templated = field.startswith(("oauth.", "actions[", "hosts["))
        if not url.strip():
            problems.append(f"{field}: must not be empty")
        elif not templated and ("{" in url or "}" in url):
            problems.append(f"{field}: {url!r} may not contain placeholders")
        elif problem := _template_problem(url, declared if templated else None):
            problems.append(f"{field}: {problem}")
    for i, host in enumerate(manifest.hosts):
        if not _HOST_ENTRY.fullmatch(host):
            problems.append(f"hosts[{i}]: {host!r} must be a host name, optionally with :port")
    problems.extend(_settings_problems(manifest))
    if manifest.oauth.revoke_url is None and (
        manifest.oauth.revocation != "rfc7009" or manifest.oauth.revoke_method != "POST"
    ):
        problems.append("oauth.revocation: needs oauth.revoke_url")
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
            hint = f"; did you mean {meant!r}?" if (meant := catalog.suggest(decl.category)) else ""
            problems.append(f"data[{i}].category: {decl.category!r} is not in the catalog{hint}")
        if not is_data_use(decl.use):
            problems.append(f"data[{i}].use: {decl.use!r} is not a known data use")
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


def _settings_problems(manifest: Manifest) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for i, setting in enumerate(manifest.settings):
        where = f"settings[{i}]"
        if setting.name in seen:
            problems.append(f"{where}.name: {setting.name!r} is declared twice")
        if setting.name in BUILTIN_PLACEHOLDERS:
            problems.append(f"{where}.name: {setting.name!r} is reserved by the broker")
        seen.add(setting.name)
        try:
            compiled = re.compile(setting.pattern)
        except re.error as exc:
            problems.append(f"{where}.pattern: is not a valid regular expression ({exc})")
            continue
        for field in ("default", "example"):
            value = getattr(setting, field)
            if value is not None and not compiled.fullmatch(value):
                problems.append(f"{where}.{field}: {value!r} does not match the pattern")
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
