"""``broker connectors new NAME``: a connector package that passes its own tests.

The package has a manifest (``manifest.toml``, with the manifest's JSON Schema beside
it for editors, and a ``[[settings]]`` example in use), a ``Connector`` subclass with a
``deliver`` hook, a contract test and tests of the setting (``tests/test_contract.py``)
and a ``pyproject.toml`` that publishes it in the ``broker.connectors`` group.

A name that is, or differs only by ``-``/``_`` from, the id of a connector already
installed is refused (``Conflict``): the broker would refuse the second one as a
duplicate id at load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from broker.core.errors import Conflict
from broker.core.manifest_schema import manifest_schema_text

__all__ = ["scaffold"]

NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "broker-connector-{name}"
version = "0.1.0"
description = "{title} connector for the scoped broker"
requires-python = ">=3.11"
dependencies = ["scoped-broker"]

[project.optional-dependencies]
test = ["scoped-broker[test]"]

[project.entry-points."broker.connectors"]
{name} = "{package}.connector:{cls}"

[tool.setuptools.packages.find]
include = ["{package}*"]

[tool.setuptools.package-data]
{package} = ["manifest.toml"]

[tool.pytest.ini_options]
pythonpath = ["."]
testpaths = ["tests"]

[tool.ruff]
line-length = 100
"""

MANIFEST = """\
#:schema ./manifest.schema.json

# {title}: what it receives, why, and how the broker reaches it.
# Reference: the broker's docs/connectors.md. Check it with: broker connectors check PATH
# The schema beside this file (the broker's docs/manifest.schema.json) lets an editor
# with taplo check the fields as you type.
id = "{name}"
name = "{title}"
description = "Posts work item updates to {title}."
privacy_policy_url = "https://{name}.example.com/legal/privacy"
terms_url = "https://{name}.example.com/legal/terms"

[oauth]
authorize_url = "https://{name}.example.com/oauth/authorize"
token_url = "https://{name}.example.com/oauth/token"
revoke_url = "https://{name}.example.com/oauth/revoke"
scopes = ["updates:write"]
client_id = "env:{env}_CLIENT_ID"
client_secret = "env:{env}_CLIENT_SECRET"

# Per-connection values: the host application passes them when it creates the connect
# session ({{"settings": {{"workspace": "team-1"}}}}); each is checked against its pattern
# and fills the {{workspace}} placeholder in the URLs below. A service with one address
# for everyone needs none: delete this table and the placeholder.
[[settings]]
name = "workspace"
label = "{title} workspace"
pattern = "^[a-z0-9][a-z0-9-]{{0,62}}$"
description = "The short name in your workspace's address: https://{name}.example.com/w/NAME"
example = "team-1"
# required = false        # the connection may go without it
# default = "general"     # used when the host gives none; must match the pattern

[[data]]
category = "user.content.work_items"
purpose = "Post each work item update (title and status) to your workspace"
required = true

[[data]]
category = "user.name"
purpose = "Say who made the change"
required = false

[[actions]]
name = "post_update"
method = "POST"
url = "https://api.{name}.example.com/v1/workspaces/{{workspace}}/updates"
description = "Post one work item update"
"""

CONNECTOR = '''\
"""{title} connector: one work item update becomes one POST to its API."""

from __future__ import annotations

from typing import Any

import httpx
from broker.connector import (
    BoundAction,
    Connector,
    DeliveryRejected,
    DeliveryResult,
    packaged_manifest,
    provider_message,
    response_id,
)

__all__ = ["{cls}"]


class {cls}(Connector):
    MANIFEST = packaged_manifest("{package}")

    def deliver(
        self, action: BoundAction, payload: dict[str, Any], client: httpx.Client
    ) -> DeliveryResult | None:
        # payload: a private copy of exactly what the user granted.
        # client: reaches only this manifest's hosts and adds the token itself.
        item = payload.get("work_item") or {{}}
        author = (payload.get("author") or {{}}).get("name")
        text = f"{{item.get('title') or item.get('id') or 'A work item'}} changed"
        if author:
            text += f" (by {{author}})"
        resp = client.post(action.url, json={{"text": text, "status": item.get("status")}})
        if resp.status_code >= 400:
            raise DeliveryRejected(provider_message(resp))
        return DeliveryResult(response_id=response_id(resp))
'''

CONTRACT = '''\
"""{title}: the broker's connector contract, and room for this service's own quirks."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from broker.connector import InvalidInput
from broker.testing import ConnectorContract, ErrorCase

from {package}.connector import {cls}

SETTINGS = {{"workspace": "team-1"}}  # this connection's [[settings]]


class Test{cls}Contract(ConnectorContract):
    connector = {cls}
    settings: ClassVar[dict[str, str]] = SETTINGS
    example_payload: ClassVar[dict[str, Any]] = {{
        "work_item": {{"id": "W-1", "title": "Ship it", "status": "done"}},
        "author": {{"name": "Ann", "email": "ann@example.com"}},
    }}
    error_cases: ClassVar[list[ErrorCase]] = [
        ErrorCase(400, {{"error": "invalid_request", "message": "text is too long"}}, "too long"),
    ]


def test_updates_go_to_the_connections_workspace(make_harness) -> None:
    harness = make_harness({cls}, settings=SETTINGS)
    transfer = harness.share(harness.connect(), Test{cls}Contract.example_payload)
    assert transfer["status"] == "delivered", transfer["reason"]
    assert harness.stored(transfer["connection_id"]).settings == SETTINGS
    assert harness.provider.requests[-1].url.path == "/v1/workspaces/team-1/updates"


@pytest.mark.parametrize("bad", ["Team-1", "team.evil.com", "", "-team"])
def test_a_bad_workspace_is_refused_when_the_session_is_created(make_harness, bad: str) -> None:
    harness = make_harness({cls}, settings=SETTINGS)
    with pytest.raises(InvalidInput) as info:
        harness.begin_connect(settings={{"workspace": bad}})
    assert info.value.details["field"] == "settings.workspace"
'''

README = """\
# {title} connector

A connector for the scoped broker. `{package}/manifest.toml` says what {title}
receives and why; `{package}/connector.py` delivers it.

    python3 -m pip install -e '.[test]'
    python3 -m pytest
"""


def scaffold(name: str, into: Path, *, installed: Mapping[str, str] | None = None) -> Path:
    """Write the package for connector ``name`` under ``into``; returns its directory.

    ``installed`` maps the ids of the connectors already installed to where each comes
    from; a ``name`` that clashes with one is refused."""
    if not NAME.fullmatch(name):
        raise ValueError(
            f"{name!r}: a connector name is lowercase letters, digits and '-', "
            "starting with a letter (2-63 characters)"
        )
    refuse_clash(name, installed or {})
    root = into / name
    if root.exists():
        raise FileExistsError(f"{root} already exists")
    package = name.replace("-", "_")
    title = " ".join(part.capitalize() for part in name.split("-"))
    values = {
        "name": name,
        "package": package,
        "title": title,
        "cls": title.replace(" ", "") + "Connector",
        "env": package.upper(),
    }
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{package}/__init__.py": '"""{title} connector for the scoped broker."""\n',
        f"{package}/manifest.toml": MANIFEST,
        f"{package}/connector.py": CONNECTOR,
        "tests/test_contract.py": CONTRACT,
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
    # the installed broker's own schema, so the editor checks what this broker accepts
    schema = root / package / "manifest.schema.json"
    schema.write_text(manifest_schema_text(), encoding="utf-8")
    return root


def refuse_clash(name: str, installed: Mapping[str, str]) -> None:
    key = name.replace("-", "_")
    for taken, source in sorted(installed.items()):
        if taken.replace("-", "_") == key:
            same = "" if taken == name else f" (as {taken!r})"
            raise Conflict(
                f"connector id {name!r} is taken{same}: already provided by {source}; "
                "choose another name",
                details={"connector": taken, "source": source},
            )
