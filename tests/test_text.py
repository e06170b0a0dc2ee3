"""Strings from outside: what reaches a terminal or a file is printable, one line and bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tokentop.text import ELLIPSIS, MAX_TEXT, csv_cell, markdown_cell, safe_optional, safe_text


def test_escape_sequences_lose_their_escape_bytes() -> None:
    hostile = "m\x1b]52;c;cHduZWQ=\x07\x1b]0;PWNTITLE\x07\x9b2J"
    made_safe = safe_text(hostile)
    assert "\x1b" not in made_safe and "\x07" not in made_safe and "\x9b" not in made_safe
    assert made_safe.startswith("m") and "PWNTITLE" in made_safe  # the text stays readable


def test_newlines_fold_and_long_text_is_cut_with_an_ellipsis() -> None:
    assert safe_text("a\nb\r\n\tc") == "a b c"
    cut = safe_text("x" * 1000)
    assert len(cut) == MAX_TEXT and cut.endswith(ELLIPSIS)
    assert safe_text("plain model-70B naïve 中文") == "plain model-70B naïve 中文"
    assert safe_optional(None) is None and safe_optional(5) == "5"


def test_bidi_overrides_and_zero_width_characters_are_replaced() -> None:
    assert safe_text("evil\u202etxt.exe\u200b") == "evil\ufffdtxt.exe\ufffd"


@given(st.text())
def test_whatever_comes_in_is_printable_and_bounded(text: str) -> None:
    out = safe_text(text)
    assert out.isprintable() and len(out) <= MAX_TEXT


def test_markdown_and_csv_cells() -> None:
    assert markdown_cell("a|b\\c") == "a\\|b\\\\c"
    for formula in ("=HYPERLINK(1)", "+1", "-1+2", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(formula) == "'" + formula
    assert csv_cell("llama-70b") == "llama-70b"
