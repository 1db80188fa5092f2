"""Password hashing (argon2id off the event loop, bounded) and the NIST SP 800-63B-4 password policy.

SECURITY.md class 5: user enumeration by timing (verify_dummy), login storms that exhaust argon2
memory/CPU (the pool and queue bounds); class 6: zxcvbn's superlinear cost on hostile input."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import argon2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authn.errors import HasherBusyError
from authn.passwords import (
    PROFILES,
    ArgonProfile,
    PasswordHasher,
    PasswordPolicy,
    PasswordProblem,
    normalize_login,
)

CHEAP = ArgonProfile("cheap-test", time_cost=1, memory_kib=1024, parallelism=1)
GOOD = "correct horse battery staple"


def fullwidth(ascii_text: str) -> str:
    """The full-width (U+FF01..U+FF5E) form of ASCII text; NFKC maps it back."""
    return "".join(chr(ord(c) + 0xFEE0) for c in ascii_text)


@pytest.fixture
async def hasher() -> AsyncIterator[PasswordHasher]:
    h = PasswordHasher()
    yield h
    h.close()


@pytest.fixture
async def cheap() -> AsyncIterator[PasswordHasher]:
    h = PasswordHasher(CHEAP)
    yield h
    h.close()


# -- profiles ----------------------------------------------------------------------------------------


async def test_default_profile_is_owasp_minimum(hasher: PasswordHasher) -> None:
    """The default is argon2id m=19 MiB, t=2, p=1 (OWASP); the RFC 9106 low-memory option is named."""
    assert hasher.profile is PROFILES["owasp"]
    assert PROFILES["owasp"] == ArgonProfile("owasp", time_cost=2, memory_kib=19_456, parallelism=1)
    assert PROFILES["rfc9106-low-memory"].memory_kib == 65_536
    assert PROFILES["rfc9106-low-memory"].time_cost == 3 and PROFILES["rfc9106-low-memory"].parallelism == 4


def test_profile_rejects_nonsense_parameters() -> None:
    """A profile with zero cost or too little memory fails at construction."""
    with pytest.raises(ValueError, match="time_cost"):
        ArgonProfile("bad", time_cost=0, memory_kib=1024, parallelism=1)
    with pytest.raises(ValueError, match="memory_kib"):
        ArgonProfile("bad", time_cost=1, memory_kib=8, parallelism=4)


# -- hashing -----------------------------------------------------------------------------------------


async def test_hash_verify_round_trip(hasher: PasswordHasher) -> None:
    """A hash verifies its password, is argon2id with the profile's parameters, and needs no rehash."""
    stored = await hasher.hash(GOOD)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await hasher.verify(stored, GOOD) == (True, False)


async def test_wrong_password_is_false_false(cheap: PasswordHasher) -> None:
    """A wrong password is (False, False), not an exception."""
    stored = await cheap.hash(GOOD)
    assert await cheap.verify(stored, GOOD + "!") == (False, False)


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=1024,t=1,p=1$AAAA$", "$2b$12$abcdefghijkl",
                                    "$argon2id$v=19$m=x,t=1,p=1$c2FsdHNhbHQ$aGFzaA"])
async def test_malformed_stored_hash_is_false_false(cheap: PasswordHasher, stored: str) -> None:
    """A malformed or foreign stored hash is (False, False), never an exception."""
    assert await cheap.verify(stored, GOOD) == (False, False)


async def test_stored_hash_demanding_huge_cost_is_refused(cheap: PasswordHasher) -> None:
    """A stored hash asking for 4 GiB is refused at once instead of being computed (tampered row)."""
    real = await cheap.hash(GOOD)
    salt, digest = real.split("$")[-2:]
    hostile = f"$argon2id$v=19$m=4194304,t=1,p=1${salt}${digest}"
    started = time.perf_counter()
    assert await cheap.verify(hostile, GOOD) == (False, False)
    assert time.perf_counter() - started < 1.0


async def test_needs_rehash_when_profile_changed(hasher: PasswordHasher, cheap: PasswordHasher) -> None:
    """A hash made with another profile verifies and asks to be rehashed (upgrade in place)."""
    old = await cheap.hash(GOOD)
    assert await hasher.verify(old, GOOD) == (True, True)
    assert await hasher.verify(await hasher.hash(GOOD), GOOD) == (True, False)


async def test_argon2i_hash_verifies_and_needs_rehash(cheap: PasswordHasher) -> None:
    """A legacy argon2i hash still verifies, and is flagged for rehash to argon2id."""
    legacy = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=argon2.Type.I).hash(GOOD)
    assert await cheap.verify(legacy, GOOD) == (True, True)


async def test_hash_and_verify_normalize_nfkc(cheap: PasswordHasher) -> None:
    """Full-width input and its ASCII form are the same password to hash and verify."""
    stored = await cheap.hash(fullwidth("CORRECT") + " horse battery")
    assert await cheap.verify(stored, "CORRECT horse battery") == (True, False)


async def test_verify_with_lone_surrogate_is_false_false(cheap: PasswordHasher) -> None:
    """A password that cannot be UTF-8 encoded (lone surrogate from JSON) fails verification quietly."""
    stored = await cheap.hash(GOOD)
    assert await cheap.verify(stored, "abc\ud800") == (False, False)


async def test_verify_dummy_costs_like_a_failed_verify(hasher: PasswordHasher) -> None:
    """An unknown user (verify_dummy) takes about as long as a wrong password (no timing enumeration)."""
    stored = await hasher.hash(GOOD)
    await hasher.verify_dummy("warm up")
    real, dummy = [], []
    for _ in range(5):
        started = time.perf_counter()
        assert await hasher.verify(stored, "wrong password") == (False, False)
        real.append(time.perf_counter() - started)
        started = time.perf_counter()
        await hasher.verify_dummy("wrong password")
        dummy.append(time.perf_counter() - started)
    ratio = statistics.median(dummy) / statistics.median(real)
    assert 1 / 3 < ratio < 3, (real, dummy)


async def test_event_loop_not_blocked_while_hashing(hasher: PasswordHasher) -> None:
    """A 5 ms ticker keeps ticking (max gap < 100 ms) while four hashes run."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    hashes = await asyncio.gather(*(hasher.hash(f"{GOOD} {i}") for i in range(4)))
    done.set()
    await task
    assert len(set(hashes)) == 4
    assert len(gaps) >= 5
    assert max(gaps) < 0.1, max(gaps)


async def test_login_storm_is_refused_beyond_the_queue_bound() -> None:
    """With 1 worker and 2 queued, 10 simultaneous hashes: the excess gets HasherBusyError at once."""
    h = PasswordHasher(max_concurrency=1, max_queue=2)
    try:
        results = await asyncio.gather(*(h.hash(f"{GOOD} {i}") for i in range(10)), return_exceptions=True)
        busy = [r for r in results if isinstance(r, HasherBusyError)]
        ok = [r for r in results if isinstance(r, str)]
        assert len(busy) + len(ok) == 10
        assert 3 <= len(ok) < 10 and busy
        # The accepted ones are real hashes, and the bound is released as work finishes.
        for i, result in enumerate(results):
            if isinstance(result, str):
                assert await h.verify(result, f"{GOOD} {i}") == (True, False)
    finally:
        h.close()


async def test_cancelled_waiters_release_the_bound() -> None:
    """Callers that give up (cancelled while queued) do not leak capacity."""
    h = PasswordHasher(max_concurrency=1, max_queue=1)
    try:
        for _ in range(3):
            tasks = [asyncio.create_task(h.hash(GOOD)) for _ in range(2)]
            await asyncio.sleep(0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.2)  # a hash that had started finishes in its thread
        first, second = await asyncio.gather(h.hash(GOOD), h.hash(GOOD))
        assert first != second
    finally:
        h.close()


# -- policy ------------------------------------------------------------------------------------------


def _reason(result: str | PasswordProblem) -> str | None:
    return result.reason if isinstance(result, PasswordProblem) else None


def test_policy_defaults_follow_nist_800_63b_4() -> None:
    """Single-factor passwords: at least 15 characters, a generous maximum of 256."""
    policy = PasswordPolicy()
    assert (policy.min_length, policy.max_length) == (15, 256)


def test_too_short() -> None:
    """Fourteen characters are too short, whatever their variety."""
    assert _reason(PasswordPolicy().check("Xq7$zL!p0@wR#2")) == "password.too_short"


def test_too_long() -> None:
    """More than max_length code points is refused, and a huge input is refused before normalizing."""
    policy = PasswordPolicy()
    assert _reason(policy.check("horse " * 43)) == "password.too_long"
    assert _reason(policy.check("x" * 1_000_000)) == "password.too_long"


def test_length_is_counted_after_nfkc() -> None:
    """Length counts code points after normalization: one ligature U+FB03 becomes three letters."""
    assert _reason(PasswordPolicy(min_length=15).check("\ufb03" * 5)) != "password.too_short"
    assert _reason(PasswordPolicy(min_length=15).check("\ufb03" * 4)) == "password.too_short"


def test_common_password_is_refused() -> None:
    """A password from the common-password list is refused, in any letter case."""
    assert _reason(PasswordPolicy().check("PasswordStandard")) == "password.common"
    assert _reason(PasswordPolicy().check("1qaz2wsx3edc4rfv")) == "password.common"


def test_common_word_pattern_is_refused() -> None:
    """'password123password' is not on the list verbatim but zxcvbn sees through it."""
    assert _reason(PasswordPolicy().check("password123password")) in ("password.common", "password.weak")


def test_keyboard_walk_is_weak() -> None:
    """A 19-character keyboard row is long enough but trivially guessable."""
    assert _reason(PasswordPolicy().check("qwertyuiopasdfghjkl")) == "password.weak"


def test_contains_username_is_refused() -> None:
    """The username (case-insensitively, >= 4 chars) inside the password is refused."""
    policy = PasswordPolicy()
    assert _reason(policy.check("ilikeBOBSMITHquitealot", username="bobsmith")) == "password.contains_context"


def test_contains_email_local_part_or_site_name_is_refused() -> None:
    """The email's local part and the site name are context words too."""
    policy = PasswordPolicy()
    assert _reason(policy.check("zebra-alice.w-violin-lamp", email="Alice.W@example.com")) == \
        "password.contains_context"
    assert _reason(policy.check("my tsgate login is here")) == "password.contains_context"


def test_short_context_words_are_ignored() -> None:
    """A 3-character username is too short to be a meaningful context word."""
    assert PasswordPolicy().check(GOOD, username="bob", email="cat@example.com") == GOOD


def test_nfkc_normalization_is_returned() -> None:
    """Full-width letters are normalized; the normalized password is what gets hashed."""
    assert PasswordPolicy().check(fullwidth("CORRECT") + " horse battery") == "CORRECT horse battery"


def test_long_passphrase_accepted() -> None:
    """A long passphrase of ordinary words is accepted as is."""
    phrase = "the violin sleeps under seven purple umbrellas"
    assert PasswordPolicy().check(phrase, username="bobsmith", email="bob@example.com") == phrase


def test_no_composition_rules() -> None:
    """All lowercase, no digits, no symbols: fine when long enough (length over composition)."""
    assert PasswordPolicy().check("ilovemydogsomuchyes") == "ilovemydogsomuchyes"


def test_all_printable_unicode_and_spaces_allowed() -> None:
    """Non-Latin scripts, emoji and spaces are all allowed."""
    phrase = "Пароль 密码 🔐 κωδικός ok"
    assert PasswordPolicy().check(phrase) == phrase


def test_lone_surrogate_is_invalid() -> None:
    """Text that cannot be encoded (a lone surrogate from JSON) is a problem value, not a crash."""
    assert _reason(PasswordPolicy().check("abc\ud800" * 6)) == "password.invalid"


def test_hostile_input_cannot_make_zxcvbn_slow() -> None:
    """256 characters of l33t-ambiguous symbols (seconds in raw zxcvbn) are checked in well under a second."""
    hostile = ("!$%(+0123456789<@[{|" + "abc") * 12
    started = time.perf_counter()
    PasswordPolicy().check(hostile[:256])
    assert time.perf_counter() - started < 1.0


def test_policy_config_validated() -> None:
    """A policy whose minimum exceeds its maximum fails at construction."""
    with pytest.raises(ValueError, match="min_length"):
        PasswordPolicy(min_length=30, max_length=20)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300) | st.text(alphabet=st.characters(categories=["Cs", "Lu", "Nd", "Po"]), max_size=80))
def test_check_never_raises(password: str) -> None:
    """check returns a value (normalized string or problem) for any text at all."""
    result = PasswordPolicy().check(password, username=password[:8], email=f"{password[:8]}@example.com")
    assert isinstance(result, str | PasswordProblem)


# -- login normalization -----------------------------------------------------------------------------


def test_normalize_login() -> None:
    """Logins compare by NFKC, case-folded, stripped form."""
    assert normalize_login("  " + fullwidth("BOB") + "\t") == "bob"
    assert normalize_login("Straße@Example.COM") == "strasse@example.com"
