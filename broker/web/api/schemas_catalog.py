"""Response bodies of /v1/catalog and /v1/connectors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from broker.web.api.schemas import _Out

__all__ = ["Catalog", "ConnectorDetail", "ConnectorPage"]


class CatalogCategory(_Out):
    key: str
    title: str
    description: str
    heading: str
    sensitivity: str
    fields: list[str] = Field(description="field patterns (`**.email`) that map to it")


class CatalogHeading(_Out):
    key: str
    title: str
    description: str
    categories: list[CatalogCategory]


class Catalog(_Out):
    version: str
    headings: list[CatalogHeading]


class ConnectorData(_Out):
    category: str
    title: str
    heading: str | None
    fields: list[str]
    purpose: str
    required: bool


class ConnectorAction(_Out):
    name: str
    method: str
    url: str
    description: str | None


class ConnectorSetting(_Out):
    name: str
    label: str
    pattern: str
    description: str | None
    required: bool
    default: str | None
    example: str | None


class ConnectorDetail(_Out):
    id: str
    name: str
    description: str | None
    logo_url: str | None
    privacy_policy_url: str
    terms_url: str
    scopes: list[str]
    revocable: bool
    data: list[ConnectorData]
    actions: list[ConnectorAction]
    settings: list[ConnectorSetting]
    hosts: list[str]
    delivery: Literal["python", "manifest"]
    source: str


class ConnectorPage(_Out):
    connectors: list[ConnectorDetail]
