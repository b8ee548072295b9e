"""The words both log verifiers use for what was done to the log.

``broker audit verify`` and ``GET /v1/audit/verify`` (``broker.core.audit_chain``,
``broker.flows.verification``) report a :class:`TamperKind` as ``problem``;
``verify-export`` (``broker/verify_export.py``) reports the same words for the same
tampering at the same entry. That file stays standalone (standard library and
``cryptography`` only, for auditors to run alone), so it spells the words as plain
strings; ``tests/integration/test_tamper_corpus.py`` holds the two to one vocabulary and runs one
corruption corpus through both verifiers.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TamperKind"]


class TamperKind(StrEnum):
    """The first problem found, as ``problem`` in a verification result."""

    MODIFIED = "modified"
    """An entry's contents, stored hash, ``seq`` or ``prev_hash`` were edited (also a row
    that cannot be read as an entry, an entry replaced by a forged one, or entries changed
    after a checkpoint signed them and the chain recomputed to hide it)."""
    DELETED = "deleted"
    """Entries were deleted from the middle and the next one re-linked or not."""
    INSERTED = "inserted"
    """A forged entry was added (a used seq, or a run branching off an earlier entry)."""
    REORDERED = "reordered"
    """Entries are out of order, or two entries' seq numbers were exchanged."""
    TRUNCATED = "truncated"
    """The log ends before what was recorded or signed (the head file, a checkpoint)."""
    FORKED = "forked"
    """History was rewritten at or before a recorded head, or two signed histories exist."""
