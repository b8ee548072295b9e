"""Policy pages as text: normalisation, digest, how much changed."""

from __future__ import annotations

import hashlib

import pytest

from broker.core.policy_text import (
    change_ratio,
    digest,
    is_significant_text_change,
    normalise,
    normalise_html,
    normalise_plain,
)

PAGE = (
    "<!doctype html><html><head><title>Acme privacy</title>"
    "<style>p { color: red }</style><script>track('x')</script></head>"
    "<body><div class='banner'><!-- ad -->Sale now on</div>"
    "<h1>Privacy</h1><p>We keep your <b>email</b> for 30&nbsp;days.</p>"
    "<p>We never sell it.</p><noscript>Enable JavaScript</noscript></body></html>"
)


def test_markup_scripts_styles_and_comments_are_stripped() -> None:
    assert normalise_html(PAGE) == (
        "Acme privacy Sale now on Privacy We keep your email for 30 days. We never sell it."
    )


def test_block_tags_separate_words_and_inline_tags_do_not() -> None:
    assert normalise_html("<p>one</p><p>two</p>") == "one two"
    assert normalise_html("<li>a<br>b</li>") == "a b"
    assert normalise_html("im<b>port</b>ant <a href='x'>link</a>s") == "important links"


def test_markup_only_and_whitespace_only_changes_keep_the_digest() -> None:
    restyled = (
        '<html>\n  <body class="v2">\n    <div id="ad"><script>show(2)</script>Sale now on</div>'
        '\n<section><h1 class="t">Privacy</h1>\n<p>We   keep your <strong>email</strong>\n'
        "for 30 days.</p><div>We never sell it.</div></section></body></html>"
    )
    before = normalise_html(PAGE).removeprefix("Acme privacy ")
    assert normalise_html(restyled) == before
    assert digest(normalise_html(restyled)) == digest(before)


def test_invisible_characters_and_unicode_forms_do_not_count() -> None:
    assert normalise_plain("caf\u0065\u0301 soft\u00adhyphen zero\u200bwidth") == (
        "caf\u00e9 softhyphen zerowidth"
    )
    assert normalise_plain("  a\t\n b\u00a0 c ") == "a b c"


def test_plain_text_pages_are_not_parsed_as_html() -> None:
    assert normalise("a <b> c", "text/plain; charset=utf-8") == "a <b> c"
    assert normalise("a <b>c</b>", "text/html") == "a c"


def test_digest_is_sha256_of_the_utf8_text() -> None:
    assert digest("héllo") == hashlib.sha256("héllo".encode()).hexdigest()
    assert digest("a") != digest("b")


def test_change_ratio() -> None:
    text = " ".join(f"word{i}" for i in range(200))
    assert change_ratio(text, text) == 0.0
    typo = text.replace("word7 ", "wrod7 ")
    assert change_ratio(text, typo) == pytest.approx(1 / 200)
    longer = text + " " + " ".join(f"new{i}" for i in range(50))
    assert change_ratio(text, longer) == pytest.approx(50 / 250)
    assert change_ratio("", "anything") == 1.0
    assert change_ratio("a b", "c d") == 1.0


def test_significance_follows_the_threshold() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    typo = text.replace("w5 ", "w5x ")
    assert not is_significant_text_change(text, typo, 0.02)
    rewritten = text.replace(" ".join(f"w{i}" for i in range(10, 20)), "we now sell data")
    assert is_significant_text_change(text, rewritten, 0.02)
    assert not is_significant_text_change(text, rewritten, 0.5)
