"""Witnessed checkpoints: the pure parts of C2SP ``tlog-witness`` and ``tlog-cosignature``.

Specs: https://c2sp.org/tlog-witness, https://c2sp.org/tlog-cosignature (Ed25519
``cosignature/v1``), https://c2sp.org/signed-note. No HTTP, no storage: the witness
server (``broker.witness_server``) and the broker's witness client
(``broker.flows.witnesses``) are adapters around these functions. Apart from the shared
RFC 9162 proof check (``broker.core.merkle.verify_consistency``) nothing here uses the
log's own code, so a witness built on it checks the log rather than trusting it.

``add-checkpoint`` request body (``add_checkpoint_body`` / ``parse_add_checkpoint``)::

    old 20852014                                   the size the witness last cosigned
    PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=   consistency proof, one hash a line
    (empty line)
    <the signed checkpoint note>

Answers (``check_add_checkpoint``): 200 with cosignature lines; 400 malformed or
``old`` above the checkpoint's size; 403 no signature by a key the witness trusts for
the origin; 404 unknown origin; 409 ``old`` is not the size the witness recorded
(body: that size and a newline, ``text/x.tlog.size``), or the same size with another
root; 422 the consistency proof does not verify.

A cosignature is a note signature line ``— <witness name> base64(key id || timestamp ||
signature)``: key id ``SHA-256(name || 0x0A || 0x04 || public key)[:4]``, timestamp a
big-endian u64 of POSIX seconds, and an Ed25519 signature over::

    cosignature/v1
    time <timestamp>
    <the checkpoint note body, final newline included, no signature lines>

A witness verifier key is a vkey with signature type ``0x04``:
``<name>+<8 hex key id>+<base64(0x04 || public key)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.core.errors import InvalidInput
from broker.core.merkle import EMPTY_ROOT, verify_consistency

__all__ = [
    "COSIGNATURE_V1",
    "ED25519_NOTE",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "Cosignature",
    "CosignatureSigner",
    "CosignatureVerifier",
    "LogKey",
    "Verdict",
    "WitnessEndpoint",
    "add_checkpoint_body",
    "check_add_checkpoint",
    "cosignature_message",
    "format_timestamp",
    "parse_add_checkpoint",
    "parse_checkpoint_body",
    "parse_cosignatures",
    "parse_size",
    "parse_witnesses",
    "quorum_time",
    "split_note",
]

ED25519_NOTE = 0x01  # signature type of a log's Ed25519 note key
COSIGNATURE_V1 = 0x04  # signature type of an Ed25519 cosignature/v1 key
MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_DASH = "\u2014 "
_NAME = re.compile(r"[^\s+]+")
_SIZE = re.compile(r"0|[1-9]\d{0,18}")


def _bad(message: str) -> InvalidInput:
    return InvalidInput(message, details={"problem": message})


def _key_id(name: str, kind: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public).digest()[:4]


def _parse_vkey(text: str, kind: int) -> tuple[str, bytes]:
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not _NAME.fullmatch(parts[0]):
        raise _bad(f"not a verifier key: {text.strip()[:80]!r}")
    try:
        raw = base64.b64decode(parts[2], validate=True)
        kid = bytes.fromhex(parts[1])
    except (binascii.Error, ValueError):
        raise _bad("verifier key is not valid base64/hex") from None
    if len(raw) != 33 or raw[0] != kind:
        raise _bad(f"verifier key {parts[0]} is not of signature type 0x{kind:02x}")
    if _key_id(parts[0], kind, raw[1:]) != kid:
        raise _bad(f"verifier key {parts[0]}: the key id does not match its name and key")
    return parts[0], raw[1:]


def _ed25519_ok(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class LogKey:
    """A log's note verifier key (type ``0x01``); its name is the log's origin."""

    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, ED25519_NOTE, self.public)

    @classmethod
    def from_vkey(cls, text: str) -> LogKey:
        return cls(*_parse_vkey(text, ED25519_NOTE))

    def verify(self, body: str, signature: bytes) -> bool:
        return _ed25519_ok(self.public, signature, body.encode())


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness's public key (type ``0x04``)."""

    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return _key_id(self.name, COSIGNATURE_V1, self.public)

    @property
    def vkey(self) -> str:
        encoded = base64.b64encode(bytes([COSIGNATURE_V1]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, text: str) -> CosignatureVerifier:
        return cls(*_parse_vkey(text, COSIGNATURE_V1))


@dataclass(frozen=True)
class CosignatureSigner:
    name: str
    private: Ed25519PrivateKey = field(repr=False)

    @property
    def verifier(self) -> CosignatureVerifier:
        public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return CosignatureVerifier(self.name, public)

    def line(self, body: str, timestamp: int) -> str:
        """The cosignature line of ``body`` (a checkpoint note's text) at ``timestamp``."""
        sig = self.private.sign(cosignature_message(body, timestamp))
        raw = self.verifier.key_id + struct.pack(">Q", timestamp) + sig
        return f"{_DASH}{self.name} {base64.b64encode(raw).decode()}\n"


@dataclass(frozen=True)
class Cosignature:
    witness: str
    key_id: str  # 8 hex
    timestamp: int  # POSIX seconds
    line: str  # the signature line, newline included


def cosignature_message(body: str, timestamp: int) -> bytes:
    if not 0 <= timestamp < 2**63:
        raise _bad("cosignature timestamp out of range")
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


def format_timestamp(timestamp: int) -> str:
    """POSIX seconds as ``2026-01-31T12:00:00Z``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def split_note(note: str) -> tuple[str, list[str]]:
    """A signed note's text (final newline included) and its signature lines."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise _bad("note contains control characters")
    body, sep, sigs = note.partition("\n\n")
    if not sep or not body or not sigs.endswith("\n"):
        raise _bad("not a signed note: text, an empty line, signature lines")
    lines = sigs[:-1].split("\n")
    if any(not line.startswith(_DASH) for line in lines):
        raise _bad("malformed signature line")
    return body + "\n", [line + "\n" for line in lines]


def _signature(line: str) -> tuple[str, bytes]:
    name, _, encoded = line[len(_DASH) :].rstrip("\n").partition(" ")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise _bad("signature is not base64") from None
    if len(raw) < 5:
        raise _bad("signature is too short")
    return name, raw


def parse_checkpoint_body(body: str) -> tuple[str, int, bytes]:
    """(origin, tree size, root hash) of a tlog-checkpoint text; extension lines ignored."""
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
        raise _bad("checkpoint text must be at least three non-empty lines")
    if not _SIZE.fullmatch(lines[1]):
        raise _bad("checkpoint tree size is not a decimal number")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except binascii.Error:
        raise _bad("checkpoint root hash is not base64") from None
    if len(root) != 32:
        raise _bad("checkpoint root hash is not 32 bytes")
    return lines[0], int(lines[1]), root


def parse_cosignatures(
    body: str, lines: list[str], verifiers: list[CosignatureVerifier]
) -> list[Cosignature]:
    """The cosignatures in ``lines`` by ``verifiers`` (others are ignored, as the spec
    says); one by a known key that does not verify is an error."""
    known = {(v.name, v.key_id): v for v in verifiers}
    out: list[Cosignature] = []
    for line in lines:
        if not line.startswith(_DASH):
            raise _bad("malformed signature line")
        name, raw = _signature(line)
        verifier = known.get((name, raw[:4]))
        if verifier is None:
            continue
        if len(raw) != 4 + 8 + 64:
            raise _bad(f"the cosignature by {name} is not a cosignature/v1")
        (timestamp,) = struct.unpack(">Q", raw[4:12])
        if timestamp >= 2**63 or not _ed25519_ok(
            verifier.public, raw[12:], cosignature_message(body, timestamp)
        ):
            raise _bad(f"the cosignature by {name}+{raw[:4].hex()} does not verify")
        out.append(Cosignature(name, raw[:4].hex(), timestamp, line))
    return out


def quorum_time(timestamps: list[int], quorum: int) -> int | None:
    """When the ``quorum``-th witness had cosigned (None: fewer cosigned). Later than
    any ``quorum - 1`` witnesses could claim alone, so they cannot backdate it."""
    if quorum < 1 or len(timestamps) < quorum:
        return None
    return sorted(timestamps)[quorum - 1]


def add_checkpoint_body(old: int, proof: list[bytes], note: str) -> bytes:
    if len(proof) > MAX_PROOF_LINES:
        raise _bad("a consistency proof has at most 63 hashes")
    lines = [f"old {old}\n"] + [base64.b64encode(h).decode() + "\n" for h in proof]
    return ("".join(lines) + "\n" + note).encode()


@dataclass(frozen=True)
class AddCheckpoint:
    old: int
    proof: list[bytes]
    note: str


def parse_add_checkpoint(data: bytes) -> AddCheckpoint:
    """An ``add-checkpoint`` body; anything malformed is an ``InvalidInput`` (400)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the request is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise _bad("the request has no empty line before the checkpoint")
    lines = head.split("\n")
    if not lines[0].startswith("old ") or not _SIZE.fullmatch(lines[0][4:]):
        raise _bad("the request does not start with an 'old <size>' line")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise _bad("a consistency proof has at most 63 hashes")
    proof = []
    for line in lines[1:]:
        try:
            digest = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise _bad("a consistency proof line is not base64") from None
        if len(digest) != 32:
            raise _bad("a consistency proof hash is not 32 bytes")
        proof.append(digest)
    return AddCheckpoint(int(lines[0][4:]), proof, note)


def parse_size(text: str) -> int:
    """The body of a 409 answer: a tree size and a newline."""
    if not text.endswith("\n") or not _SIZE.fullmatch(text[:-1]):
        raise _bad("the witness's 409 answer is not a tree size")
    return int(text[:-1])


@dataclass(frozen=True)
class Verdict:
    """A witness's answer to one ``add-checkpoint``: the HTTP status, why, and for 200
    the state to record (origin, size, root) and the note text to cosign."""

    status: int
    reason: str
    origin: str = ""
    size: int = 0
    root: bytes = b""
    body: str = ""  # the checkpoint text (200), or the recorded size line (409)
    evidence: bool = False  # signed by the log yet refused: keep it, it may prove a fork


def check_add_checkpoint(
    req: AddCheckpoint,
    log_keys: list[LogKey],
    recorded: tuple[int, bytes] | None,
    *,
    origin_of: str | None = None,
) -> Verdict:
    """The witness's checks, in the spec's order. ``recorded``: the (size, root) it last
    cosigned for the checkpoint's origin (None: never). Pure: the caller reads
    ``recorded`` and stores the new state atomically with this decision."""
    body, lines = split_note(req.note)
    origin, size, root = parse_checkpoint_body(body)
    if origin_of is not None and origin != origin_of:
        return Verdict(400, "the checkpoint is not of the requested origin")
    keys = [k for k in log_keys if k.name == origin]
    if not keys:
        return Verdict(404, f"unknown log origin {origin[:100]!r}")
    by_id = {k.key_id: k for k in keys}
    signed = False
    for line in lines:
        name, raw = _signature(line)
        key = by_id.get(raw[:4]) if name == origin else None
        if key is not None and key.verify(body, raw[4:]):
            signed = True
    if not signed:
        return Verdict(403, "no signature by a key trusted for this origin")
    if req.old > size:
        return Verdict(400, "old size is larger than the checkpoint's size")
    have_size, have_root = recorded or (0, EMPTY_ROOT)
    if req.old != have_size:
        return Verdict(409, "old size is not the recorded size", body=f"{have_size}\n")
    base = Verdict(0, "", origin, size, root, body, evidence=True)
    if req.old == size:
        if req.proof:
            return _with(base, 422, "the consistency proof must be empty for equal sizes")
        if recorded is not None and root != have_root:
            return _with(base, 409, "same size, another root: a fork", f"{have_size}\n")
    elif req.old == 0:
        if req.proof:
            return _with(base, 422, "the consistency proof must be empty from size 0")
    elif not verify_consistency(req.old, size, have_root, root, req.proof):
        return _with(base, 422, "the consistency proof does not verify")
    return Verdict(200, "cosigned", origin, size, root, body)


def _with(base: Verdict, status: int, reason: str, body: str | None = None) -> Verdict:
    return Verdict(
        status, reason, base.origin, base.size, base.root, base.body if body is None else body,
        evidence=True,
    )  # fmt: skip


@dataclass(frozen=True)
class WitnessEndpoint:
    """One configured witness: its submission prefix and its cosignature key."""

    url: str
    verifier: CosignatureVerifier

    @property
    def add_checkpoint_url(self) -> str:
        return self.url.rstrip("/") + "/add-checkpoint"


def parse_witnesses(text: str) -> list[WitnessEndpoint]:
    """``BROKER_WITNESSES``: entries separated by newlines or commas, each
    ``<URL> <witness vkey>`` (URL: https, or http on a loopback host)."""
    out: list[WitnessEndpoint] = []
    for entry in re.split(r"[,\n]", text):
        if not entry.strip():
            continue
        parts = entry.split()
        if len(parts) != 2:
            raise _bad("each witness is '<URL> <verifier key>'")
        url, vkey = parts
        if not re.fullmatch(r"https://[^\s/]+(/\S*)?|http://(127\.0\.0\.1|localhost|\[::1\])"
                            r"(:\d+)?(/\S*)?", url):  # fmt: skip
            raise _bad(f"witness URL must be https (http only on loopback): {url[:100]}")
        endpoint = WitnessEndpoint(url, CosignatureVerifier.from_vkey(vkey))
        if any(e.verifier.key_id == endpoint.verifier.key_id for e in out):
            raise _bad(f"witness {endpoint.verifier.name} is listed twice")
        out.append(endpoint)
    return out
