"""ALTCHA v2 challenges: created and verified with the altcha package, solved by its reference
solver; splicing, expiry, foreign keys and garbage are refused as values, never exceptions."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import altcha
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captcha.keys import CaptchaKeys
from captcha.pow import PowIssuer
from gateway.core.clock import FrozenClock
from tests.captcha.conftest import LEVELS, new_keys, solve


@pytest.fixture
def issuer(clock: FrozenClock) -> PowIssuer:
    return PowIssuer(new_keys(), clock, levels=LEVELS, ttl=60.0)


def test_challenge_shape_is_what_the_widget_reads(issuer: PowIssuer, clock: FrozenClock) -> None:
    """{parameters, signature}: PBKDF2/SHA-256, the level's cost, expiresAt set, signed data."""
    challenge = issuer.create("guarded", 2, "a:xyz")
    params = challenge["parameters"]
    assert set(challenge) == {"parameters", "signature"} and len(challenge["signature"]) == 64
    assert params["algorithm"] == "PBKDF2/SHA-256" and params["cost"] == LEVELS[1].cost
    assert params["expiresAt"] == int(clock.now()) + 60 and params["keySignature"]
    assert params["data"]["s"] == "guarded" and params["data"]["l"] == 2 and params["data"]["b"] == "a:xyz"


def test_solved_challenge_verifies(issuer: PowIssuer) -> None:
    """The reference solver's answer verifies and carries scope, level, binding and a replay id."""
    challenge = issuer.create("guarded", 1, "a:xyz")
    verdict = issuer.check(solve(challenge))
    assert verdict.outcome == "ok" and verdict.scope == "guarded" and verdict.level == 1
    assert verdict.binding == "a:xyz" and verdict.nonce == challenge["parameters"]["nonce"]
    as_widget_sends_it = base64.b64encode(json.dumps(solve(challenge)).encode()).decode()
    assert issuer.check(as_widget_sends_it).outcome == "ok"


def test_counter_is_random_within_the_level(issuer: PowIssuer) -> None:
    """The answer's counter lies in [counter/2, counter], and differs between challenges."""
    counters = {solve(issuer.create("guarded", 1, "b"))["solution"]["counter"] for _ in range(8)}
    assert all(LEVELS[0].counter // 2 <= c <= LEVELS[0].counter for c in counters) and len(counters) > 1


def test_expired_challenge_is_refused(issuer: PowIssuer, clock: FrozenClock) -> None:
    """Past expiresAt (by our clock) the solution is refused as expired."""
    payload = solve(issuer.create("guarded", 1, "a:xyz"))
    clock.advance(61)
    assert issuer.check(payload).outcome == "expired"


@pytest.mark.parametrize("field, value", [
    ("salt", "00" * 16), ("nonce", "11" * 16), ("cost", 1), ("keyPrefix", "00"), ("expiresAt", 4_102_444_800),
    ("data", {"s": "admin"}), ("keySignature", "00" * 32), ("algorithm", "SHA-256"),
])
def test_spliced_parameters_break_the_signature(issuer: PowIssuer, field: str, value: Any) -> None:
    """CVE-2025-68113 class: any change to a signed parameter (salt, expiry, cost, data ...) is invalid."""
    payload = solve(issuer.create("guarded", 1, "a:xyz"))
    params = payload["challenge"]["parameters"]
    params[field] = {**params["data"], **value} if field == "data" else value
    assert issuer.check(payload).outcome == "invalid"


def test_removed_expiry_or_signature_is_refused(issuer: PowIssuer) -> None:
    """Dropping expiresAt, keySignature or the signature itself does not make a challenge valid."""
    for path in (("parameters", "expiresAt"), ("parameters", "keySignature"), ("signature",)):
        payload = solve(issuer.create("guarded", 1, "a:xyz"))
        target = payload["challenge"]
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]
        assert issuer.check(payload).outcome in ("invalid", "malformed"), path


def test_wrong_signature_key_is_refused(clock: FrozenClock) -> None:
    """A challenge signed with another ring (even with the same kid) does not verify."""
    mine = PowIssuer(CaptchaKeys([("k1", b"a" * 32)]), clock, levels=LEVELS, ttl=60.0)
    theirs = PowIssuer(CaptchaKeys([("k1", b"b" * 32)]), clock, levels=LEVELS, ttl=60.0)
    assert mine.check(solve(theirs.create("guarded", 1, "x"))).outcome == "invalid"


def test_rotated_key_still_verifies_older_challenges(clock: FrozenClock) -> None:
    """After a rotation, challenges signed with the previous key still verify until they expire."""
    old = PowIssuer(CaptchaKeys([("old", b"a" * 32)]), clock, levels=LEVELS, ttl=60.0)
    new = PowIssuer(CaptchaKeys([("new", b"b" * 32), ("old", b"a" * 32)]), clock, levels=LEVELS, ttl=60.0)
    assert new.check(solve(old.create("guarded", 1, "x"))).outcome == "ok"


def test_wrong_solution_is_refused(issuer: PowIssuer) -> None:
    """Another derived key (even one with the right prefix) is invalid."""
    payload = solve(issuer.create("guarded", 1, "x"))
    bad = copy.deepcopy(payload)
    key = bad["solution"]["derivedKey"]
    bad["solution"]["derivedKey"] = key[:-2] + ("00" if key[-2:] != "00" else "01")
    assert issuer.check(bad).outcome == "invalid"
    bad["solution"]["derivedKey"] = "zz"
    assert issuer.check(bad).outcome == "invalid"


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                 max_size=4), max_leaves=20))
def test_garbage_never_raises(raw: Any) -> None:
    """Any JSON-ish value, or its base64, is malformed or invalid — never an exception."""
    issuer = PowIssuer(CaptchaKeys([("k", b"k" * 32)]), FrozenClock(), levels=LEVELS, ttl=60.0)
    assert issuer.check(raw).outcome in ("malformed", "invalid")
    encoded = base64.b64encode(json.dumps(raw).encode()).decode()
    assert issuer.check(encoded).outcome in ("malformed", "invalid")


@settings(max_examples=100, deadline=None)
@given(parameters=st.dictionaries(st.sampled_from(["algorithm", "nonce", "salt", "cost", "keyPrefix", "keyLength",
                                                   "keySignature", "expiresAt", "data", "memoryCost"]),
                                  st.none() | st.integers(-5, 10**12) | st.text(max_size=40)
                                  | st.dictionaries(st.text(max_size=3), st.integers(), max_size=3)),
       counter=st.integers(-1, 2**33), derived=st.text(max_size=70))
def test_hostile_parameter_objects_never_raise(parameters: dict[str, Any], counter: int, derived: str) -> None:
    """Well-shaped payloads with hostile parameter values are refused as values."""
    issuer = PowIssuer(CaptchaKeys([("k", b"k" * 32)]), FrozenClock(), levels=LEVELS, ttl=60.0)
    payload = {"challenge": {"parameters": parameters, "signature": "ab" * 32},
               "solution": {"counter": counter, "derivedKey": derived}}
    assert issuer.check(payload).outcome in ("malformed", "invalid", "expired")


def test_interop_with_the_altcha_reference_verifier(issuer: PowIssuer) -> None:
    """Our challenge is a standard ALTCHA v2 challenge: the library verifies it with our secrets."""
    challenge = issuer.create("guarded", 1, "x")
    payload = altcha.Payload.from_dict(solve(challenge))
    key = issuer.keys.current
    assert altcha.verify_solution(payload, key.challenge, hmac_key_secret=key.derived).verified
    assert altcha.verify_solution(payload, key.challenge).verified  # slow path: re-derive from the counter
