"""Near-duplicate detection across accounts: the signature of a spam campaign.

One text becomes a MinHash signature over character 5-gram shingles of a *skeleton* (folded
view, letters and digits only, every digit as ``0``, links reduced to their domain), so that the
usual per-account variations — a different phone number, a different shortener slug, swapped
punctuation, homoglyphs, a word or two changed — still collide. The signature is cut into LSH
bands; each band bucket is one sliding window in the shared StateStore whose members are the
*accounts* that posted into it (``window_add`` keeps members unique), so the count it returns is
the number of distinct accounts that posted something similar in the window.

Keys: ``<ns>:{nd:<band>:<bucket>}`` — one hash-tagged entity per bucket, so Redis Cluster spreads
buckets over slots and every operation touches one key. Repeats and velocity of one account use
``<ns>:{acct:<principal>}:...``: all of an account's keys share a slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.core.state import MemoryStore
from gateway.core.state.base import StateStore, store_key
from moderation.config import NearDupSettings
from moderation.features import _codepoints, _mix, _prefix, _substring_hashes
from moderation.urls import link_host

__all__ = ["CampaignHit", "NearDupIndex", "minhash_bands", "skeleton"]

_SHINGLE = 5
_MAX_SKELETON = 4_000
_NON_ALNUM = re.compile(r"[^0-9a-z\u00c0-\U0010ffff]+")
_DIGITS = re.compile(r"[0-9]")
_U64 = np.uint64
_MASK61 = (1 << 61) - 1
_SEED = 0x5BD1E9955BD1E995


def skeleton(folded: str) -> str:
    """What stays the same across a campaign's variants."""
    words = folded[: _MAX_SKELETON * 2].split()
    for i, word in enumerate(words):
        if "." in word:  # a link keeps only its domain: slugs and tracking ids vary per account
            host = link_host(word.strip(".,;:!?)]}>'\"*").lstrip("([{<'\"*"))
            if host is not None:
                words[i] = host
    text = _DIGITS.sub("0", " ".join(words))
    return " ".join(_NON_ALNUM.sub(" ", text).split())[:_MAX_SKELETON]


@dataclass(frozen=True, slots=True)
class _Permutations:
    a: npt.NDArray[np.uint64]
    b: npt.NDArray[np.uint64]


def _permutations(count: int) -> _Permutations:
    # Fixed seeds: every gateway process must compute the same signature for the same text.
    rng = np.random.default_rng(0x7473676174)
    a = rng.integers(0, np.iinfo(np.uint64).max, size=count, dtype=np.uint64, endpoint=True)  # row seeds
    b = np.zeros(count, dtype=np.uint64)  # unused; kept so the structure stays one type
    return _Permutations(a, b)


_PERMS: dict[int, _Permutations] = {}


def minhash_bands(text: str, bands: int, rows: int) -> list[str] | None:
    """One hex digest per band, or None when the text is too short to say anything."""
    if len(text) < _SHINGLE + 1:
        return None
    codes = _codepoints(text)
    prefix, powers = _prefix(codes)
    starts = np.arange(len(codes) - _SHINGLE + 1, dtype=np.int64)
    shingles = _mix(_substring_hashes(prefix, powers, starts, starts + _SHINGLE), _SEED)
    # One independent 64-bit hash per row: the shingle XOR a per-row seed through a murmur3
    # finalizer (wrapping uint64 arithmetic). An earlier (a*x + b) mod 2**61-1 with a < 2**31
    # hardly wrapped, so every row picked the same few smallest shingles: unrelated texts of
    # common words then shared band buckets and read as campaigns.
    x = np.unique(shingles)
    count = bands * rows
    perms = _PERMS.get(count)
    if perms is None:
        perms = _PERMS.setdefault(count, _permutations(count))
    z = perms.a[:, None] ^ x[None, :]
    z = (z ^ (z >> _U64(33))) * _U64(0xFF51AFD7ED558CCD)
    z = (z ^ (z >> _U64(33))) * _U64(0xC4CEB9FE1A85EC53)
    signature = (z ^ (z >> _U64(33))).min(axis=1)
    out = []
    for band in range(bands):
        chunk = signature[band * rows: (band + 1) * rows].tobytes()
        out.append(hashlib.blake2b(chunk, digest_size=8).hexdigest())
    return out


@dataclass(frozen=True, slots=True)
class CampaignHit:
    other_accounts: int  # the most distinct other accounts seen in any one band bucket
    bands_matched: int  # buckets with at least one other account (out of ``bands``)


class NearDupIndex:
    """Records a text's band buckets for ``principal`` and reports who else posted alike."""

    __slots__ = ("namespace", "settings", "store")

    def __init__(self, store: StateStore, settings: NearDupSettings, namespace: str = "mod") -> None:
        self.store = store
        self.settings = settings
        self.namespace = namespace

    async def observe(self, skel: str, principal: str, at: float) -> CampaignHit | None:
        """Add this post (its ``skeleton``) and return the campaign evidence; None when the text
        is too short. Raises StoreError (the guard turns it into an evidence-only symbol)."""
        if len(skel) < self.settings.min_chars:
            return None
        digests = minhash_bands(skel, self.settings.bands, self.settings.rows)
        if digests is None:
            return None
        window = self.settings.window
        keys = [store_key(self.namespace, f"nd:{i}:{d}") for i, d in enumerate(digests)]
        if isinstance(self.store, MemoryStore):  # no I/O: tasks would only add overhead
            counts = [await self.store.window_add(k, principal, at, window) for k in keys]
        else:  # one round trip per band, issued together (the pool runs them concurrently)
            counts = list(await asyncio.gather(*(self.store.window_add(k, principal, at, window) for k in keys)))
        others = [c - 1 for c in counts]  # this principal is a member of every bucket it hit
        return CampaignHit(max(others), sum(1 for o in others if o > 0))
