"""Data uses and the operator's policy of forbidden uses ("we do not sell").

Purposes are keyed by fideslang data-use keys (``broker/core/data/data_uses.toml``: the
fideslang default taxonomy plus the broker's extension ``third_party_sharing.sale``).
Uses are hierarchical: a key covers every key below it, so forbidding
``marketing.advertising.third_party`` also forbids
``marketing.advertising.third_party.targeted``.

The policy file (TOML; the packaged default is ``broker/core/data/policy.toml``, the
operator's is named by ``BROKER_POLICY_FILE``)::

    forbidden_uses = ["third_party_sharing.sale", "marketing.advertising.third_party"]

A connector whose manifest declares a forbidden use is refused when the runtime loads
the registry; a transfer that asks for one is blocked and logged (the share flow calls
``Policy.forbids``). Manifests only check that a use is a known key (``is_data_use``).
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from broker.core.errors import ConfigurationError

__all__ = [
    "DEFAULT_USE",
    "Policy",
    "data_uses",
    "is_data_use",
    "load_policy",
]

DEFAULT_USE = "functional.service"
"""The use of a declaration that names none: the function the user integrated it for."""


@functools.cache
def data_uses() -> dict[str, str]:
    """Every known data-use key with its name, in file order."""
    text = (resources.files("broker.core") / "data" / "data_uses.toml").read_text("utf-8")
    return {item["key"]: item["name"] for item in tomllib.loads(text)["uses"]}


def is_data_use(key: str) -> bool:
    return key in data_uses()


def _covers(parent: str, key: str) -> bool:
    return key == parent or key.startswith(parent + ".")


@dataclass(frozen=True)
class Policy:
    forbidden_uses: tuple[str, ...]
    source: str = "default"

    def forbids(self, use: str) -> str | None:
        """The forbidden key that covers ``use``, or None when it is allowed."""
        return next((f for f in self.forbidden_uses if _covers(f, use)), None)

    def forbidden_in(self, uses: Iterable[str]) -> dict[str, str]:
        """``{use: forbidding key}`` for each forbidden use in ``uses``."""
        return {u: f for u in uses if (f := self.forbids(u)) is not None}


def load_policy(path: Path | None = None) -> Policy:
    """The operator's policy file, or the packaged default when ``path`` is None."""
    if path is None:
        text = (resources.files("broker.core") / "data" / "policy.toml").read_text("utf-8")
        label = "default"
    else:
        label = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"policy file {label} cannot be read: {exc.strerror}"
            ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"policy file {label} is not valid TOML: {exc}") from None
    forbidden = raw.get("forbidden_uses", [])
    problems = [f"unknown key {k!r}" for k in sorted(set(raw) - {"forbidden_uses"})]
    if not isinstance(forbidden, list) or not all(isinstance(u, str) for u in forbidden):
        problems.append("forbidden_uses must be a list of data-use keys")
        forbidden = []
    problems += [
        f"forbidden_uses: {u!r} is not a known data use" for u in forbidden if not is_data_use(u)
    ]
    if problems:
        raise ConfigurationError(
            f"policy file {label} is invalid: {'; '.join(problems)}", details={"problems": problems}
        )
    return Policy(tuple(forbidden), label)
