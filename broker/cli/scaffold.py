"""``broker connectors new NAME``: a connector package that passes its own tests.

The package has a manifest (``manifest.toml``, with the manifest's JSON Schema beside
it for editors), a ``Connector`` subclass with a ``deliver`` hook, a contract test
(``tests/test_contract.py``) and a ``pyproject.toml`` that publishes it in the
``broker.connectors`` group.
"""

from __future__ import annotations

import re
from pathlib import Path

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
url = "https://api.{name}.example.com/v1/updates"
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

from broker.testing import ConnectorContract, ErrorCase

from {package}.connector import {cls}


class Test{cls}Contract(ConnectorContract):
    connector = {cls}
    example_payload: ClassVar[dict[str, Any]] = {{
        "work_item": {{"id": "W-1", "title": "Ship it", "status": "done"}},
        "author": {{"name": "Ann", "email": "ann@example.com"}},
    }}
    error_cases: ClassVar[list[ErrorCase]] = [
        ErrorCase(400, {{"error": "invalid_request", "message": "text is too long"}}, "too long"),
    ]
'''

README = """\
# {title} connector

A connector for the scoped broker. `{package}/manifest.toml` says what {title}
receives and why; `{package}/connector.py` delivers it.

    python3 -m pip install -e '.[test]'
    python3 -m pytest
"""


def scaffold(name: str, into: Path) -> Path:
    """Write the package for connector ``name`` under ``into``; returns its directory."""
    if not NAME.fullmatch(name):
        raise ValueError(
            f"{name!r}: a connector name is lowercase letters, digits and '-', "
            "starting with a letter (2-63 characters)"
        )
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
