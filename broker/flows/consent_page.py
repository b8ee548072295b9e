"""The consent page's model: what a connect link shows before the user approves.

The connector's categories under the catalog's headings (those for a use the user may
object to, marketing, apart and unticked), the third party's policy and terms links
with their last snapshots (:mod:`broker.flows.policy_snapshots`), the platform account
being connected and the platform's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from broker.core.catalog import Heading
from broker.core.connector import Connector
from broker.flows.connect import check_connector, session_ticket
from broker.flows.connection_setup import settings_in_token
from broker.flows.oauth_clients import connection_credentials
from broker.flows.policy_checks import PolicyChecks, ensure_checked
from broker.flows.preferences import covered_by, objectable, read_preferences
from broker.runtime import Runtime
from broker.store.db import session_scope

__all__ = ["CategoryChoice", "ConsentView", "category_choices", "consent_view"]


@dataclass(frozen=True)
class CategoryChoice:
    key: str
    title: str
    description: str
    sensitivity: str
    fields: tuple[str, ...]
    purpose: str
    required: bool
    use: str = ""
    objected: bool = False  # the user objects to this use: nothing is sent for it


@dataclass(frozen=True)
class ConsentView:
    session_id: str
    user_id: str
    connector: Connector
    groups: list[tuple[Heading, list[CategoryChoice]]]
    policy_version: str
    policy_url: str | None
    return_url: str | None
    expires_at: datetime
    settings: dict[str, str] = field(default_factory=dict)
    display_name: str | None = None
    platform_name: str | None = None
    confirm: bool = False
    # Categories for a use the user may object to (marketing): shown apart, always a
    # choice (an objection wins over ``required``), unticked to start.
    marketing: list[CategoryChoice] = field(default_factory=list)
    # The third party's policy and terms pages: when each was last checked, and
    # whether it could be retrieved (broker.flows.policy_snapshots).
    policy_checks: PolicyChecks | None = None

    @property
    def account_name(self) -> str:
        """How the page names the platform account being connected."""
        return self.display_name or self.user_id


def category_choices(
    rt: Runtime, connector: Connector, user_id: str
) -> tuple[list[tuple[Heading, list[CategoryChoice]]], list[CategoryChoice]]:
    """The connector's categories as the consent page lists them, under the catalog's
    headings, and apart those for a use the user may object to (marketing)."""
    groups: list[tuple[Heading, list[CategoryChoice]]] = []
    marketing: list[CategoryChoice] = []
    declared = {d.category: d for d in connector.manifest.data}
    objections = read_preferences(rt, user_id).object_to
    for heading, categories in rt.catalog.by_heading():
        choices = [
            CategoryChoice(
                key=c.key,
                title=c.title,
                description=c.description,
                sensitivity=c.sensitivity,
                fields=c.fields,
                purpose=declared[c.key].purpose,
                required=declared[c.key].required,
                use=declared[c.key].use,
                objected=covered_by(declared[c.key].use, objections) is not None,
            )
            for c in categories
            if c.key in declared
        ]
        marketing += [c for c in choices if covered_by(c.use, objectable(rt))]
        choices = [c for c in choices if c not in marketing]
        if choices:
            groups.append((heading, choices))
    return groups, marketing


def consent_view(rt: Runtime, *, token: str | None, connector_id: str) -> ConsentView:
    connector = rt.registry.get(connector_id)
    with session_scope(rt.engine) as session:
        row = session_ticket(session, token, kind="connect", now=rt.clock(), claim=False)
        check_connector(row, connector_id)
    # an unconfigured connector (or tenant) is not offered for consent
    connection_credentials(rt, connector, row.tenant)
    policy_checks = ensure_checked(rt, connector)  # a snapshot of what the links show
    groups, marketing = category_choices(rt, connector, row.user_id)
    return ConsentView(
        session_id=row.id,
        user_id=row.user_id,
        connector=connector,
        groups=groups,
        policy_version=rt.settings.policy_version,
        policy_url=rt.settings.policy_url,
        return_url=row.return_url,
        expires_at=row.expires_at,
        settings=connector.manifest.validate_settings(settings_in_token(token)),
        display_name=row.display_name,
        platform_name=rt.settings.platform_name,
        confirm=row.confirm,
        marketing=marketing,
        policy_checks=policy_checks,
    )
