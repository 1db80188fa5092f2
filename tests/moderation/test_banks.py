"""Keyword and regex banks on RE2: refused patterns fail at load with a clear error; regex bombs
cannot blow up (SECURITY.md class 6)."""

from __future__ import annotations

import time

import pytest

from moderation.banks import compile_keyword_bank, compile_regex_bank
from moderation.errors import PatternError
from moderation.normalize import normalize


def test_keyword_bank_matches_whole_words_on_folded_text() -> None:
    """Keywords match whole words, across leetspeak and homoglyph disguises."""
    bank = compile_keyword_bank("scam", ["free cash", "wire transfer"])
    hit = bank.match(normalize("Get FR33 C4SH by w\u0456re transfer").folded)
    assert hit is not None and hit.count == 2 and set(hit.hits) == {"free cash", "wire transfer"}
    assert bank.match(normalize("freecashflow is an accounting term").folded) is None


@pytest.mark.parametrize(("pattern", "why"), [
    (r"(a)\1", "backreference"),
    (r"foo(?=bar)", "lookahead"),
    (r"(?<=x)y", "lookbehind"),
    (r"a++", "possessive"),
])
def test_re2_refuses_backtracking_constructs(pattern: str, why: str) -> None:
    """Patterns RE2 cannot run in linear time are refused at load, naming the bank and pattern."""
    with pytest.raises(PatternError) as info:
        compile_regex_bank("rules", ["ok", pattern])
    assert "rules" in str(info.value) and repr(pattern) in str(info.value), why


def test_regex_bomb_runs_in_linear_time() -> None:
    """(a+)+$ and friends on 1 MB of 'a' followed by a non-match finish fast under RE2."""
    bank = compile_regex_bank("bombs", [r"(a+)+$", r"(a|aa)+b", r"(.*a){20}"])
    text = "a" * 1_000_000 + "!"
    started = time.perf_counter()
    bank.match(text)
    assert time.perf_counter() - started < 2.0


def test_regex_bank_case_and_hits() -> None:
    """Case-insensitive by default; distinct hits counted, evidence capped."""
    bank = compile_regex_bank("phones", [r"\b0[0-9]{10}\b"])
    hit = bank.match("call 08712345678 or 08712345679 or 08712345678")
    assert hit is not None and hit.count == 2
    assert compile_regex_bank("cs", ["ABC"], case_sensitive=True).match("abc") is None


def test_bank_size_limits() -> None:
    """Empty banks and oversized patterns are refused."""
    with pytest.raises(PatternError):
        compile_keyword_bank("empty", [])
    with pytest.raises(PatternError):
        compile_regex_bank("huge", ["a" * 5000])
