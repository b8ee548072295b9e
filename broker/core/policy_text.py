"""A third party's policy page as text, its digest, and how much of it changed.

The broker keeps what a privacy policy or terms page *said*, not how it was laid out:
:func:`normalise` strips the markup (tags, comments, and whatever ``script``, ``style``,
``noscript`` and ``template`` elements hold), decodes character references, drops
invisible formatting characters (soft hyphens, zero-width spaces), applies Unicode NFC
and collapses every run of whitespace to one space. A page whose banner markup,
classes, scripts or indentation changed therefore has the same text and the same
:func:`digest` (SHA-256 of the text's UTF-8) as before: it has not changed at all.

:func:`change_ratio` measures a real text change: the share of words inserted, deleted
or replaced (a word-level diff), 0.0 for identical texts and 1.0 for nothing in
common. :func:`is_significant_text_change` compares it with the operator's threshold
(``BROKER_POLICY_CHANGE_THRESHOLD``).
"""

from __future__ import annotations

import hashlib
import unicodedata
from difflib import SequenceMatcher
from html.parser import HTMLParser

__all__ = [
    "change_ratio",
    "digest",
    "is_significant_text_change",
    "normalise",
    "normalise_html",
    "normalise_plain",
]

# Elements whose content is not text a reader sees.
_HIDDEN = frozenset({"script", "style", "noscript", "template"})
# Inline elements: their tags do not separate words ("<b>wo</b>rd" is "word"); every
# other tag does ("<p>a</p><p>b</p>" is "a b").
_INLINE = frozenset(
    {
        "a", "abbr", "b", "bdi", "bdo", "cite", "code", "data", "dfn", "em", "font", "i",
        "kbd", "mark", "q", "s", "samp", "small", "span", "strong", "sub", "sup", "time",
        "u", "var",
    }
)  # fmt: skip


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag not in _INLINE:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _INLINE and tag not in _HIDDEN:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag not in _INLINE:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def normalise_plain(text: str) -> str:
    """NFC, invisible formatting characters dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(text.split())


def normalise_html(markup: str) -> str:
    """The text a reader sees on an HTML page, normalised (see the module docstring)."""
    parser = _TextCollector()
    parser.feed(markup)
    parser.close()
    return normalise_plain("".join(parser.parts))


def normalise(body: str, content_type: str | None) -> str:
    """The normalised text of a page: HTML unless ``content_type`` says plain text."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "text/plain":
        return normalise_plain(body)
    return normalise_html(body)


def digest(text: str) -> str:
    """SHA-256 (hex) of the normalised text's UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def change_ratio(before: str, after: str) -> float:
    """The share of words changed between two normalised texts (0.0 … 1.0)."""
    if before == after:
        return 0.0
    a, b = before.split(), after.split()
    longest = max(len(a), len(b))
    if not a or not b:
        return 1.0
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    changed = sum(
        max(i2 - i1, j2 - j1) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"
    )
    return min(1.0, changed / longest)


def is_significant_text_change(before: str, after: str, threshold: float) -> bool:
    """Whether the text changed by more than ``threshold`` (a share of its words)."""
    return change_ratio(before, after) > threshold
