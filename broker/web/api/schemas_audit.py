"""Response bodies of /v1/audit, the disclosure reports and the users' preferences,
and the request bodies of the routes that parse theirs by hand (documented only)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from broker.web.api.schemas import OLD_NAME, Utc, _In, _Out

__all__ = [
    "ChainHead",
    "Checkpoint",
    "CheckpointPage",
    "ConsistencyProof",
    "DisclosureCreate",
    "DisclosureReport",
    "InclusionProof",
    "Integrity",
    "JsonWebKeySet",
    "LogEntry",
    "LogPage",
    "Preferences",
    "PreferencesUpdate",
    "ProcessingRecords",
    "PublicKeySet",
    "RecipientPage",
    "ReportMeta",
    "VerificationRun",
]


class ChainHead(_Out):
    seq: int
    hash: str


class VerificationRun(_Out):
    id: int
    kind: str
    status: str
    actor: str | None
    started_at: Utc | None
    finished_at: Utc | None
    duration_ms: int | None
    from_seq: int | None
    to_seq: int | None
    checkpoint_size: int | None
    done: int | None
    total: int | None
    ok: bool | None
    checked: int | None
    head: ChainHead | None
    problem: str | None
    first_bad_seq: int | None
    message: str | None


class Integrity(_Out):
    ok: bool | None
    checked: int | None
    head: ChainHead | None
    first_bad_seq: int | None
    problem: str | None
    message: str | None
    chain_head: ChainHead | None
    verification: VerificationRun | None
    running: VerificationRun | None
    unverified: int | None


class Recipient(_Out):
    """One recipient's summary (the CLI's report gives the same rows)."""

    connector_id: str | None = Field(description="null for a legal disclosure's recipient")
    connector: str | None = Field(
        json_schema_extra=OLD_NAME, description="old name of connector_id"
    )
    name: str | None
    privacy_policy_url: str | None
    terms_url: str | None
    categories: list[str]
    field_paths: list[str]
    transfers: int
    failed: int
    blocked: int
    first_at: Utc | None
    last_at: Utc | None
    legal_disclosure: bool = False
    references: list[str | None] = []


class ReportCheckpoint(_Out):
    tree_size: int
    root_hash: str
    time: str
    origin: str


class ReportMeta(_Out):
    """What pins a report to a verifiable state (broker.flows.report_meta)."""

    generated_at: str = Field(description="RFC 3339 UTC with Z")
    controller: str | None = Field(description="BROKER_PLATFORM_NAME; null when not set")
    checkpoint: ReportCheckpoint | None = Field(
        description="the latest signed checkpoint the report was computed at; null: none yet"
    )
    head: ChainHead | None


class RecipientPage(_Out):
    recipients: list[Recipient]
    report: ReportMeta | None = None


class LogEntry(_Out):
    """One audit entry, as hashed: ``time`` and ``details`` are kept as the chain wrote
    them."""

    _times_in_z: ClassVar[bool] = False

    seq: int
    time: str = Field(description="RFC 3339 UTC with Z, exactly as hashed")
    event: str
    actor: str | None
    user_id: str | None
    connector_id: str | None
    connection_id: str | None
    transfer_id: str | None
    consent_id: str | None
    categories: list[str]
    field_paths: list[str]
    purpose: str | None
    legal_basis: str | None
    payload_sha256: str | None
    payload_bytes: int | None
    destination: str | None
    outcome: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class LogPage(_Out):
    entries: list[LogEntry]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")
    next_after: int | None = Field(
        json_schema_extra=OLD_NAME, description="old form of next_cursor"
    )


class Checkpoint(_Out):
    id: int | None = None
    origin: str
    tree_size: int
    root_hash: str
    time: str = Field(description="as signed")
    witnessed_time: str | None
    key_id: str
    note: str = Field(description="the C2SP signed note")


class CheckpointPage(_Out):
    checkpoints: list[Checkpoint]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")
    next_after_id: int | None = Field(
        json_schema_extra=OLD_NAME, description="old form of next_cursor"
    )


class InclusionProof(_Out):
    seq: int
    leaf_index: int
    tree_size: int
    leaf_hash: str
    root_hash: str
    proof: list[str]


class ConsistencyProof(_Out):
    model_config = ConfigDict(populate_by_name=True)

    from_: int = Field(alias="from")
    to: int
    from_root: str
    to_root: str
    proof: list[str]


class PublicKey(_Out):
    key_id: str
    vkey: str
    algorithm: str
    active: bool
    created_at: Utc | None
    retired_at: Utc | None
    legacy: bool | None = None


class PublicKeySet(_Out):
    origin: str
    active_key_id: str | None
    keys: list[PublicKey]


class JsonWebKeySet(_Out):
    keys: list[dict[str, Any]] = Field(description="RFC 7517 JWKs (OKP, Ed25519)")


class ProcessingDeclaration(_Out):
    use: str
    use_name: str
    purposes: list[str]
    categories: list[str]
    legal_basis: str | None


class TermsSent(_Out):
    terms_version: str | None = Field(description="null: sent before terms versions")
    policy_digests: dict[str, str | None] | None
    categories: list[str]
    category_transfers: dict[str, int]
    first_at: Utc
    last_at: Utc


class Art15Sent(_Out):
    recipient: str | None
    recipient_name: str | None
    category: str
    title: str
    kind: str
    terms_version: str | None
    policy_digests: dict[str, str | None]
    times: int
    first_at: Utc
    last_at: Utc


class Art15Sections(_Out):
    """GDPR Art. 15(1)(a)-(h), as far as the broker knows (docs/users.md)."""

    purposes: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    sent_under: list[Art15Sent] = Field(description="per recipient, category, terms version")
    retention: list[dict[str, Any]]
    rights: list[dict[str, Any]]
    source: str
    automated_decisions: str


class ProcessingRecord(_Out):
    recipient: str
    name: str | None
    kind: str
    flagged: bool
    installed: bool | None = None
    privacy_policy_url: str | None
    terms_url: str | None
    declarations: list[ProcessingDeclaration]
    received_categories: list[str]
    transfers: int
    first_at: Utc | None
    last_at: Utc | None
    terms: list[TermsSent] = Field(
        default=[], description="each terms version the recipient's data was sent under"
    )


class ProcessingRecords(_Out):
    recipients: list[ProcessingRecord]
    report: ReportMeta | None = None


class ReportRecipient(_Out):
    recipient: str
    name: str | None
    kind: str
    flagged: bool
    categories: list[str]
    field_paths: list[str]
    purposes: list[str]
    uses: list[str]
    legal_bases: list[str]
    references: list[str]
    disclosures: int
    first_at: Utc | None
    last_at: Utc | None


class ReportDisclosure(_Out):
    time: Utc
    recipient: str
    recipient_name: str | None
    kind: str
    flagged: bool
    legal_basis: str | None
    purpose: str | None
    uses: list[str] | None
    categories: list[str]
    field_paths: list[str]
    reference: str | None
    possible: bool
    consent_id: str | None
    transfer_id: str | None


class DisclosureReport(_Out):
    user_id: str
    recipients: list[ReportRecipient]
    disclosures: list[ReportDisclosure]
    objections: list[dict[str, Any]]
    art15: Art15Sections | None = None
    report: ReportMeta | None = None
    #: true when the broker holds no data of the user (never known, or erased)
    no_data: bool | None = None
    message: str | None = None


class DataUse(_Out):
    use: str
    name: str


class Preferences(_Out):
    user_id: str
    object_to: list[str]
    objectable: list[DataUse]
    updated_at: Utc | None


class PreferencesUpdate(_In):
    """Replace the user's objections (``[]`` withdraws them all)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"object_to": ["marketing"]}]})

    object_to: list[str] = Field(description="data-use keys the user objects to")


class DisclosureCreate(_In):
    """A disclosure the law required (no consent)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "user-1",
                    "recipient": "Tax authority",
                    "categories": ["user.name"],
                    "legal_basis": "legal_obligation",
                    "reference": "order 2026-17",
                }
            ]
        }
    )

    user_id: str = Field(min_length=1, max_length=200)
    recipient: str = Field(min_length=1, max_length=200)
    categories: list[str]
    legal_basis: str = Field(min_length=1, max_length=40)
    reference: str = Field(min_length=1, max_length=200)
    purpose: str | None = None
    field_paths: list[str] = []
