"""Password hashing (argon2id, off the event loop, bounded) and the password policy (NIST SP 800-63B-4).

The safe recipe is ``PasswordPolicy().check(pw)`` at sign-up, then ``await PasswordHasher().hash(...)``
on what it returns; at login ``await hasher.verify(stored, pw)`` and, for an unknown user,
``await hasher.verify_dummy(pw)`` so both paths cost the same (OWASP ASVS V6, attack class 5).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import threading
import unicodedata
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import matching as zxcvbn_matching
from zxcvbn import zxcvbn
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from authn.errors import HasherBusyError

__all__ = [
    "PROFILES",
    "ArgonProfile",
    "PasswordHasher",
    "PasswordPolicy",
    "PasswordProblem",
    "normalize_login",
]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ArgonProfile:
    """argon2id cost parameters. ``memory_kib`` is per hash: peak memory is ``max_concurrency`` times it."""

    name: str
    time_cost: int
    memory_kib: int
    parallelism: int
    hash_len: int = 32
    salt_len: int = 16

    def __post_init__(self) -> None:
        if self.time_cost < 1 or self.parallelism < 1 or self.hash_len < 16 or self.salt_len < 16:
            raise ValueError(f"argon2 profile {self.name!r}: time_cost/parallelism >= 1, hash/salt_len >= 16")
        if self.memory_kib < 8 * self.parallelism:
            raise ValueError(f"argon2 profile {self.name!r}: memory_kib must be >= 8 * parallelism")


PROFILES: Mapping[str, ArgonProfile] = MappingProxyType({
    # OWASP Password Storage Cheat Sheet, argon2id minimum: m=19 MiB, t=2, p=1. The default: ~20 logins/s
    # fit beside proxy traffic on 2 cores, and 2 concurrent hashes cap memory at ~38 MiB.
    "owasp": ArgonProfile("owasp", time_cost=2, memory_kib=19_456, parallelism=1),
    # RFC 9106 section 4, second recommended option (for memory-constrained settings): m=64 MiB, t=3, p=4.
    "rfc9106-low-memory": ArgonProfile("rfc9106-low-memory", time_cost=3, memory_kib=65_536, parallelism=4),
})

# A stored hash names its own cost. One that asks for more than this is refused (False, False) instead of
# verified: a tampered or imported row must not make a login allocate gigabytes or burn seconds.
MAX_VERIFY_MEMORY_KIB = 262_144
MAX_VERIFY_TIME_COST = 16
MAX_VERIFY_PARALLELISM = 16


class PasswordHasher:
    """argon2id in a small thread pool, so the event loop never blocks and memory stays bounded.

    At most ``max_concurrency`` hashes run at once and at most ``max_queue`` wait; one more call raises
    ``HasherBusyError`` at once (answer 503 + Retry-After), so a login storm cannot queue without bound
    (OWASP API4). Passwords are NFKC-normalized here too, so hash and verify always agree.
    """

    def __init__(self, profile: ArgonProfile = PROFILES["owasp"], *, max_concurrency: int = 2,
                 max_queue: int = 64) -> None:
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        self.profile = profile
        self._argon = argon2.PasswordHasher(
            time_cost=profile.time_cost, memory_cost=profile.memory_kib, parallelism=profile.parallelism,
            hash_len=profile.hash_len, salt_len=profile.salt_len, type=argon2.Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="tsgate-argon2")
        self._lock = threading.Lock()
        self._in_pool = 0
        self._capacity = max_concurrency + max_queue
        # Computed in the background: construction never blocks, and the first dummy verify waits for it.
        self._dummy: Future[str] = self._pool.submit(self._argon.hash, secrets.token_urlsafe(24))

    async def hash(self, password: str) -> str:
        """An argon2id PHC string for the (NFKC-normalized) password."""
        return await self._run(self._hash_sync, password)

    async def verify(self, stored_hash: str, password: str) -> tuple[bool, bool]:
        """``(ok, needs_rehash)``. A wrong password or a malformed stored hash is ``(False, False)``.

        ``needs_rehash`` is True when the hash was made with other parameters than this profile: rehash
        the password the user just proved and store it (upgrade in place)."""
        return await self._run(self._verify_sync, stored_hash, password)

    async def verify_dummy(self, password: str) -> None:
        """Verify against a throwaway hash of this profile: an unknown user costs what a wrong password costs."""
        await self._run(self._verify_dummy_sync, password)

    def close(self) -> None:
        """Cancel queued work and let the pool's threads finish; does not wait for a running hash."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- in the pool ---------------------------------------------------------------------------------

    def _hash_sync(self, password: str) -> str:
        return self._argon.hash(unicodedata.normalize("NFKC", password))

    def _verify_sync(self, stored_hash: str, password: str) -> tuple[bool, bool]:
        try:
            params = argon2.extract_parameters(stored_hash)
        except (InvalidHashError, ValueError, TypeError):
            return False, False
        if (params.memory_cost > MAX_VERIFY_MEMORY_KIB or params.time_cost > MAX_VERIFY_TIME_COST
                or params.parallelism > MAX_VERIFY_PARALLELISM):
            return False, False
        try:
            self._argon.verify(stored_hash, unicodedata.normalize("NFKC", password))
        except (VerificationError, InvalidHashError, ValueError):  # ValueError: unencodable (lone surrogate)
            return False, False
        return True, self._argon.check_needs_rehash(stored_hash)

    def _verify_dummy_sync(self, password: str) -> None:
        self._verify_sync(self._dummy.result(), password)

    # -- the bound -----------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: str) -> _T:
        with self._lock:
            if self._in_pool >= self._capacity:
                raise HasherBusyError("too many password hashes in flight; retry later")
            self._in_pool += 1
        try:
            # submit + wrap_future is loop.run_in_executor, but the done-callback also fires when a
            # queued job is cancelled, so the count stays exact when callers give up.
            job = self._pool.submit(fn, *args)
        except BaseException:
            self._release()
            raise
        job.add_done_callback(self._release)
        return await asyncio.wrap_future(job)

    def _release(self, _job: object = None) -> None:
        with self._lock:
            self._in_pool -= 1


# -- the policy --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordProblem:
    """Why a password was refused. ``reason`` is a stable code; ``detail`` is safe to show the user."""

    reason: str
    detail: str


# NFKC can shrink text at most ~4:1 (e.g. alpha + three combining marks -> U+1F85): anything longer than
# this many times max_length is too long whatever it normalizes to, and is refused before normalizing.
_MAX_NFKC_SHRINK = 8
# zxcvbn is pure Python and superlinear: ~(2 + l33t variants) dictionary passes over n^2 substrings. A
# random 256-char string takes ~10 s and 32 chars of l33t symbols ~0.6 s, so only a bounded prefix is
# scored. The budget is in those units (measured: a few tens of ms at most on a 2-core machine).
_SCORE_MAX_CHARS = 64
_SCORE_BUDGET = 8 * 64 * 64
# zxcvbn() stores the user inputs in a module-level dict while it runs: serialize calls.
_ZXCVBN_LOCK = threading.Lock()


@cache
def _common_passwords() -> frozenset[str]:
    return frozenset(FREQUENCY_LISTS["passwords"])


def _l33t_variants(text: str) -> int:
    subtable = zxcvbn_matching.relevant_l33t_subtable(text, zxcvbn_matching.L33T_TABLE)
    return len(zxcvbn_matching.enumerate_l33t_subs(subtable))


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """NIST SP 800-63B-4 section 3.1.1.2: length over composition, a blocklist, no composition rules.

    * at least ``min_length`` (15: single-factor passwords, rev. 4) and at most ``max_length`` code points,
      counted after NFKC normalization; every printable character and space is allowed;
    * refused when it is a common/breached password (zxcvbn's 30 000 most common), contains the username,
      the email's local part (when >= 4 chars) or "tsgate", or zxcvbn scores it below ``min_score``.

    ``check`` returns the normalized password to hash, or a ``PasswordProblem`` -- values, not exceptions.
    zxcvbn only scores a cost-bounded prefix (at most 64 code points); a password with so many different
    l33t-ambiguous symbols that even ``min_length`` of it is too costly to score skips the score (it is not
    a dictionary word with substitutions) but still passes every other rule.
    """

    min_length: int = 15
    max_length: int = 256
    min_score: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError("password policy: need 1 <= min_length <= max_length")
        if not 0 <= self.min_score <= 4:
            raise ValueError("password policy: min_score is a zxcvbn score, 0..4")

    def check(self, password: str, *, username: str = "", email: str = "") -> str | PasswordProblem:
        """The NFKC-normalized password to hash, or why it is refused."""
        if len(password) > self.max_length * _MAX_NFKC_SHRINK:
            return self._too_long()
        try:
            password.encode("utf-8")
        except UnicodeEncodeError:
            return PasswordProblem("password.invalid", "The password contains invalid characters.")
        normalized = unicodedata.normalize("NFKC", password)
        if len(normalized) < self.min_length:
            return PasswordProblem("password.too_short", f"Use at least {self.min_length} characters.")
        if len(normalized) > self.max_length:
            return self._too_long()
        lowered = normalized.lower()
        common = _common_passwords()
        if lowered in common or "".join(lowered.split()) in common:
            return PasswordProblem("password.common", "This password is in lists of commonly used passwords.")
        context = _context_words(username, email)
        folded = normalize_login(normalized)
        if any(word in folded for word in context):
            return PasswordProblem("password.contains_context",
                                   "The password must not contain your username, email or the site name.")
        score = self._score(normalized, context)
        if score is not None and score < self.min_score:
            return PasswordProblem("password.weak",
                                   "This password is easy to guess; a few unrelated words make a strong one.")
        return normalized

    def _too_long(self) -> PasswordProblem:
        return PasswordProblem("password.too_long", f"Use at most {self.max_length} characters.")

    def _score(self, normalized: str, context: list[str]) -> int | None:
        prefix = self._scoring_prefix(normalized)
        if prefix is None:
            return None
        with _ZXCVBN_LOCK:
            result = zxcvbn(prefix, user_inputs=context, max_length=len(prefix))
        return int(result["score"])

    def _scoring_prefix(self, normalized: str) -> str | None:
        n = min(len(normalized), _SCORE_MAX_CHARS)
        while n >= min(self.min_length, _SCORE_MAX_CHARS):
            passes = 2 + _l33t_variants(normalized[:n])
            if passes * n * n <= _SCORE_BUDGET:
                return normalized[:n]
            n = min(n - 1, math.isqrt(_SCORE_BUDGET // passes))
        return None


def _context_words(username: str, email: str) -> list[str]:
    words = ["tsgate"]
    name = normalize_login(username)
    if len(name) >= 4:
        words.append(name)
    local = normalize_login(email).rpartition("@")[0] if "@" in email else normalize_login(email)
    if len(local) >= 4:
        words.append(local)
    return words


def normalize_login(value: str) -> str:
    """The key usernames and emails are unique and looked up by: NFKC, case-folded, stripped."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold()).strip()
