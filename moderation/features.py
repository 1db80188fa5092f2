"""Hashed word and character n-grams, computed with numpy in a few vectorized passes.

The same code builds the training matrix and scores at run time, so the two can never disagree.
Hashing is a polynomial rolling hash over code points (mod 2**64, numpy's wrapping uint64
arithmetic) with prefix sums, so *every* substring hash — all char n-grams, every word, every
word bigram — costs O(1) after one pass: no Python loop per n-gram, no per-process hash seed.

Families, each L2-scaled by the square root of its own count so neither dominates:

* ``char``: n-grams of ``lower`` (digits and punctuation kept: prices, phone numbers, "!!!");
* ``word``: unigrams and bigrams of alphanumeric words of ``folded`` (leetspeak undone).

Features are binary (each bucket counted once, at its first position): see ``_first_occurrences``.

Every feature carries its position, so a long text can be scored per segment (see
``moderation.model``): appending pages of harmless text cannot dilute a spam paragraph.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from moderation.normalize import Normalized

__all__ = ["FeatureSpec", "Features", "featurize"]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_P = np.uint64(0x100000001B3)  # odd, hence invertible mod 2**64
_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)
_SEED_CHAR = 0x9E3779B97F4A7C15
_SEED_WORD = 0xD6E8FEB86659FD93
_SEED_BIGRAM = 0xA0761D6478BD642F
_SEED_SHAPE = 0xE7037ED1A0B428DB


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """What a model was trained on; stored in the model file and checked at load."""

    bits: int = 20  # 2**bits hashed buckets
    char_min: int = 2
    char_max: int = 5
    word_bigrams: bool = True
    fold_digits: bool = False  # char n-grams see every digit as "0": "0845 2810075" -> "0000 0000000"
    shapes: bool = False  # one extra word feature per number-bearing word, its digits as "0"
    max_chars: int = 20_000  # longer texts keep their head and tail (see ``bounded``); < 65,536

    def __post_init__(self) -> None:
        if not 10 <= self.bits <= 24:
            raise ValueError("bits must be in 10..24")
        if not 1 <= self.char_min <= self.char_max <= 8:
            raise ValueError("char n-gram range must be within 1..8")
        if not 0 < self.max_chars < 65_000:
            raise ValueError("max_chars must be below 65,000 (positions are packed in 16 bits)")

    @property
    def size(self) -> int:
        return 1 << self.bits


@dataclass(frozen=True, slots=True)
class Features:
    """Bucket indices with the text position each came from (for per-segment scoring)."""

    char_idx: I64
    char_pos: I64
    word_idx: I64
    word_pos: I64
    length: int


@functools.cache
def _powers(n: int) -> tuple[U64, U64]:
    """P**k and P**-k for k < n (mod 2**64)."""
    p_inv = pow(int(_P), -1, 1 << 64)
    ones = np.ones(1, dtype=np.uint64)
    pw = np.concatenate([ones, np.cumprod(np.full(n - 1, _P, dtype=np.uint64), dtype=np.uint64)])
    inv = np.concatenate([ones, np.cumprod(np.full(n - 1, np.uint64(p_inv), dtype=np.uint64), dtype=np.uint64)])
    return pw, inv


@functools.cache
def _is_word_table() -> npt.NDArray[np.bool_]:
    """Alphanumeric code points (computed once, ~0.1 s): what separates words."""
    table = np.zeros(sys.maxunicode + 1, dtype=np.bool_)
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        if chr(code).isalnum():
            table[code] = True
    return table


def _mix(h: U64, seed: int) -> U64:
    """Finalizer (murmur3 fmix64): spreads the polynomial hash over the high bits."""
    h = h ^ np.uint64(seed)
    h = (h ^ (h >> _SHIFT)) * _MIX1
    h = (h ^ (h >> _SHIFT)) * _MIX2
    return h ^ (h >> _SHIFT)


def _codepoints(text: str) -> U64:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def _prefix(codes: U64) -> tuple[U64, U64]:
    """Prefix sums S with hash(a, b) = (S[b] - S[a]) * P**(b-1): the hash of codes[a:b]."""
    pw, inv = _powers(len(codes) + 1)
    prefix = np.zeros(len(codes) + 1, dtype=np.uint64)
    np.cumsum(codes * inv[: len(codes)], dtype=np.uint64, out=prefix[1:])
    return prefix, pw


def _substring_hashes(prefix: U64, pw: U64, starts: I64, ends: I64) -> U64:
    return (prefix[ends] - prefix[starts]) * pw[ends - 1]


def _first_occurrences(idx: I64, pos: I64) -> tuple[I64, I64]:
    """Each bucket once, at its first position: features are binary (present or not).

    Counts would let repetition amplify a score: a sentence repeated k times scales the sum by
    k but the norm by sqrt(k), so "hahaha..." or a pasted paragraph would reach any score. One
    sort of (bucket << 16 | position) keys gives both the set and the first positions."""
    if len(idx) == 0:
        return idx, pos
    keys = np.sort((idx << 16) | pos)
    buckets = keys >> 16
    first = np.empty(len(keys), dtype=np.bool_)
    first[0] = True
    np.not_equal(buckets[1:], buckets[:-1], out=first[1:])
    return buckets[first], keys[first] & 0xFFFF


def bounded(text: str, max_chars: int) -> str:
    """Head and tail of an over-long text, so spam cannot hide after a long harmless preamble."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return text[:half] + " " + text[-half:]


def featurize(views: Normalized, spec: FeatureSpec) -> Features:
    shift = np.uint64(64 - spec.bits)
    empty = np.zeros(0, dtype=np.int64)

    # Character n-grams over " lower ": the padding marks the first and last word.
    text = " " + bounded(views.lower, spec.max_chars) + " "
    codes = _codepoints(text)
    if spec.fold_digits:
        codes = np.where((codes >= 48) & (codes <= 57), np.uint64(48), codes)
    prefix, pw = _prefix(codes)
    # Every n-gram length in one batch: starts and lengths side by side, one hash pass.
    lengths = [n for n in range(spec.char_min, spec.char_max + 1) if len(codes) - n + 1 > 0]
    if lengths:
        base = np.arange(len(codes), dtype=np.int64)
        char_pos = np.concatenate([base[: len(codes) - n + 1] for n in lengths])
        ends = char_pos + np.repeat(np.asarray(lengths, dtype=np.int64), [len(codes) - n + 1 for n in lengths])
        # The length goes into the seed, so "ab" as a 2-gram and as part of longer grams differ.
        seeds = (ends - char_pos).astype(np.uint64) * np.uint64(_SEED_CHAR)
        # Multiplicative (Fibonacci) hashing: the top bits of h * odd constant. The polynomial
        # hash's high bits already depend on every character; one multiply spreads them. The
        # full finalizer (_mix) costs ~4x more and is kept for word hashes (fewer, cheaper).
        hashes = (_substring_hashes(prefix, pw, char_pos, ends) ^ seeds) * _MIX1
        char_idx, char_pos = _first_occurrences((hashes >> shift).astype(np.int64), char_pos)
    else:
        char_idx = char_pos = empty

    # Words of the folded view, and bigrams of consecutive words.
    words_text = bounded(views.folded, spec.max_chars)
    wcodes = _codepoints(words_text)
    if len(wcodes) == 0:
        return Features(char_idx, char_pos, empty, empty, len(text))
    table = _is_word_table()
    is_word = table[wcodes.astype(np.int64)].astype(np.int8)
    edges = np.diff(np.concatenate([[0], is_word, [0]]).astype(np.int8))
    w_starts = np.flatnonzero(edges == 1).astype(np.int64)
    w_ends = np.flatnonzero(edges == -1).astype(np.int64)
    if len(w_starts) == 0:
        return Features(char_idx, char_pos, empty, empty, len(text))
    wprefix, wpw = _prefix(wcodes)
    word_hash = _substring_hashes(wprefix, wpw, w_starts, w_ends)
    parts = [_mix(word_hash, _SEED_WORD) >> shift]
    positions = [w_starts]
    if spec.word_bigrams and len(word_hash) > 1:
        parts.append(_mix(word_hash[:-1] * _P + word_hash[1:], _SEED_BIGRAM) >> shift)
        positions.append(w_starts[:-1])
    if spec.shapes:
        digit = (wcodes >= 48) & (wcodes <= 57)
        has_digit = np.add.reduceat(digit.astype(np.int64), w_starts) > 0
        if has_digit.any():
            scodes = np.where(digit, np.uint64(48), wcodes)
            sprefix, spw = _prefix(scodes)
            shape_hash = _substring_hashes(sprefix, spw, w_starts[has_digit], w_ends[has_digit])
            parts.append(_mix(shape_hash, _SEED_SHAPE) >> shift)
            positions.append(w_starts[has_digit])
    # Word positions are in the folded view; scale them onto the char view's positions so that
    # segments cut both families at (about) the same place.
    word_pos = np.concatenate(positions)
    if len(wcodes) != len(codes):
        word_pos = (word_pos * len(codes)) // max(1, len(wcodes))
    word_idx, word_pos = _first_occurrences(np.concatenate(parts).astype(np.int64), word_pos)
    return Features(char_idx, char_pos, word_idx, word_pos, len(text))
