"""Keyword and regex banks from the policy, compiled with RE2 (linear time, bounded memory).

Python's ``re`` backtracks: one policy pattern like ``(a+)+$`` turns a comment into a CPU bomb
(SECURITY.md class 6). RE2 has no backtracking, so its match time is linear in the text whatever
the pattern; the price is no backreferences and no lookaround, and such patterns are refused at
load with a ``PatternError`` that names the bank and the pattern."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import re2

from moderation.errors import PatternError

__all__ = ["BankMatch", "CompiledBank", "compile_keyword_bank", "compile_regex_bank"]

MAX_PATTERN_CHARS = 2_000
MAX_PATTERNS = 5_000
_RE2_MAX_MEM = 32 << 20  # per compiled bank: a huge alternation fails to compile instead of eating memory
_MAX_EVIDENCE = 5


@dataclass(frozen=True, slots=True)
class BankMatch:
    bank: str
    hits: tuple[str, ...]  # distinct matched texts, at most a few (evidence)
    count: int  # distinct matches (capped at the bank's max_hits by the scorer)


class CompiledBank:
    """One bank: a single RE2 program (an alternation of every pattern), run once per text."""

    __slots__ = ("_regex", "name")

    def __init__(self, name: str, regex: re2._Regexp) -> None:
        self.name = name
        self._regex = regex

    def match(self, text: str, limit: int = 64) -> BankMatch | None:
        hits: dict[str, None] = {}
        for found in self._regex.finditer(text):
            hits.setdefault(found.group(0), None)
            if len(hits) >= limit:
                break
        if not hits:
            return None
        return BankMatch(self.name, tuple(list(hits)[:_MAX_EVIDENCE]), len(hits))


def _options(case_sensitive: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is reported by PatternError, not on stderr
    options.max_mem = _RE2_MAX_MEM
    options.case_sensitive = case_sensitive
    return options


def _check_sizes(name: str, patterns: Sequence[str]) -> None:
    if not patterns:
        raise PatternError(f"bank {name!r}: no patterns")
    if len(patterns) > MAX_PATTERNS:
        raise PatternError(f"bank {name!r}: {len(patterns)} patterns, at most {MAX_PATTERNS}")
    for pattern in patterns:
        if not pattern or len(pattern) > MAX_PATTERN_CHARS:
            raise PatternError(f"bank {name!r}: pattern {pattern[:60]!r} must be 1..{MAX_PATTERN_CHARS} characters")


def _compile(name: str, source: str, case_sensitive: bool) -> re2._Regexp:
    try:
        return re2.compile(source, _options(case_sensitive))
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(f"bank {name!r}: RE2 cannot compile it ({detail})") from None


def compile_regex_bank(name: str, patterns: Sequence[str], *, case_sensitive: bool = False) -> CompiledBank:
    """Each pattern is compiled alone first, so the error names the pattern that RE2 refuses
    (backreferences ``\\1``, lookaround ``(?=``/``(?<=``, possessive quantifiers, ...)."""
    _check_sizes(name, patterns)
    for pattern in patterns:
        try:
            re2.compile(pattern, _options(case_sensitive))
        except re2.error as exc:
            detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            raise PatternError(f"bank {name!r}: pattern {pattern!r} is not supported by RE2 ({detail}); "
                               "backreferences and lookaround are refused because they need backtracking") from None
    return CompiledBank(name, _compile(name, "|".join(f"(?:{p})" for p in patterns), case_sensitive))


def compile_keyword_bank(name: str, keywords: Sequence[str]) -> CompiledBank:
    """Whole-word, case-insensitive keywords or phrases, matched on the folded view (so the bank
    lists ``free cash`` once and catches ``FR33 C4SH`` and ``fr\u0435e c\u0430sh`` (Cyrillic look-alikes) too)."""
    _check_sizes(name, keywords)
    folded = sorted({" ".join(k.casefold().split()) for k in keywords}, key=len, reverse=True)
    # RE2's \b is ASCII-only: keywords starting or ending with punctuation ("$$$") or a
    # non-ASCII letter are matched without it on that side.
    parts = []
    for keyword in folded:
        body = re.escape(keyword).replace("\\ ", " ")
        left = r"\b" if keyword[0].isascii() and keyword[0].isalnum() else ""
        right = r"\b" if keyword[-1].isascii() and keyword[-1].isalnum() else ""
        parts.append(f"{left}{body}{right}")
    return CompiledBank(name, _compile(name, "|".join(parts), False))
