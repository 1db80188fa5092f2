"""Normalization against evasion (SECURITY.md class 8): homoglyphs, zero-width characters,
leetspeak, letter spacing; ordinary non-Latin text and emoji are left alone."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from moderation.normalize import normalize

CYR_E, CYR_A, CYR_O = "\u0435", "\u0430", "\u043e"
ZWSP, ZWJ, ZWNJ = "\u200b", "\u200d", "\u200c"


def test_homoglyphs_fold_to_latin() -> None:
    """Cyrillic look-alikes inside Latin words fold to the Latin word, and are reported."""
    views = normalize(f"Fr{CYR_E}{CYR_E} m{CYR_O}ney, cl{CYR_A}im now")
    assert views.folded == "free money, claim now"
    assert views.confusables == 4
    assert len(views.mixed_script_words) == 3
    assert views.original.startswith("Fr\u0435")  # the original is kept for the review record


def test_fullwidth_and_math_letters_fold_by_nfkc() -> None:
    """Fullwidth and mathematical alphanumerics are the same word after NFKC."""
    assert normalize("\uff26\uff52\uff45\uff45 \U0001d41c\U0001d41a\U0001d42c\U0001d421").folded == "free cash"


def test_whole_word_lookalikes_fold_without_latin_letters() -> None:
    """A word made only of look-alikes (Cyrillic s-e-x look-alikes) still reads as Latin."""
    assert normalize("\u0455\u0435\u0445").folded == "sex"


def test_real_cyrillic_and_greek_text_is_not_mangled() -> None:
    """Words with letters that have no Latin look-alike stay in their script."""
    text = "Привет, как дела? Καλημέρα"
    views = normalize(text)
    assert views.clean == text
    assert views.confusables == 0 and not views.mixed_script_words


def test_zero_width_characters_removed_and_counted_inside_words() -> None:
    """Zero-width spaces splitting a word are removed and counted as in-word evasion."""
    views = normalize(f"vi{ZWSP}ag{ZWSP}ra che{ZWNJ}ap")
    assert views.folded == "viagra cheap"
    assert views.invisible == 3 and views.invisible_in_words == 3


def test_emoji_zwj_sequences_are_not_counted_as_evasion() -> None:
    """ZWJ joining emoji is legitimate: removed for scoring, not counted as evasion."""
    views = normalize(f"family \U0001f468{ZWJ}\U0001f469{ZWJ}\U0001f467 day")
    assert views.invisible == 2 and views.invisible_in_words == 0


def test_leetspeak_folded_in_words_not_in_numbers() -> None:
    """fr33 c4sh becomes free cash; phone numbers and prices keep their digits."""
    views = normalize("FR33 C4SH!!! call 08712345678 for £100 v1agra")
    assert views.folded == "free cash!!! call 08712345678 for £100 viagra"
    assert views.leet_words == 3
    assert "08712345678" in views.lower  # the char n-gram view keeps digits


def test_spaced_and_stretched_letters() -> None:
    """v-i-a-g-r-a and f r e e join up; freeeeee shrinks to free."""
    views = normalize("buy v-i-a-g-r-a and f r e e stuff, freeeeeee")
    assert views.folded == "buy viagra and free stuff, free"
    assert views.spaced_words == 2


def test_diacritics_stripped_in_lower_view() -> None:
    """Latin diacritics do not hide a word from the model: frée == free."""
    assert normalize("Frée Café").lower == "free cafe"


def test_control_characters_become_spaces() -> None:
    """Control characters and line separators split words like spaces do."""
    assert normalize("a\x00b\u2028c\td").clean == "a b c d"


def test_one_megabyte_of_text_normalizes_in_bounded_time() -> None:
    """Pathological input: 1 MB of mixed evasion characters is linear, well under a second."""
    text = (f"fr{CYR_E}{CYR_E}{ZWSP}c4sh v-i-a-g-r-a " * 40_000)[:1_000_000]
    started = time.perf_counter()
    views = normalize(text)
    assert time.perf_counter() - started < 5.0
    assert views.folded.startswith("freecash viagra")  # the zero-width space joined the words


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_normalize_is_total_and_strips_invisibles(text: str) -> None:
    """Any string normalizes without error; the clean view has no format characters left."""
    views = normalize(text)
    assert "\u200b" not in views.clean and "\ufeff" not in views.clean
    assert views.clean == " ".join(views.clean.split())
