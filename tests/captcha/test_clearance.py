"""Clearance tokens: AES-GCM sealed and authenticated; any change, truncation, foreign key or
garbage opens to None; bound to the principal (user id, or IP + User-Agent)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from captcha.clearance import Clearance, ClearanceSealer, principal_binding
from captcha.keys import CaptchaKeys
from gateway.core.context import Principal

CLEARANCE = Clearance("id-1", "a:abc", "guarded", 2, 1_700_000_000, 1_700_000_600, 3)


@pytest.fixture
def sealer() -> ClearanceSealer:
    return ClearanceSealer(CaptchaKeys([("k1", b"1" * 32)]))


def test_round_trip_and_secrecy(sealer: ClearanceSealer) -> None:
    """A sealed clearance opens to itself; its contents are not readable in the token."""
    token = sealer.seal(CLEARANCE)
    assert sealer.open(token) == CLEARANCE
    assert "guarded" not in token and "a:abc" not in token and token.startswith("c1.k1.")
    assert sealer.seal(CLEARANCE) != token  # a fresh nonce every time


def test_every_character_change_is_refused(sealer: ClearanceSealer) -> None:
    """Flipping any character of the sealed part, or truncating it, fails authentication."""
    token = sealer.seal(CLEARANCE)
    start = len("c1.k1.")
    for i in range(start, len(token)):
        flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
        assert sealer.open(flipped) is None, i
    for cut in (1, 5, 20):
        assert sealer.open(token[:-cut]) is None


def test_foreign_and_rotated_keys(sealer: ClearanceSealer) -> None:
    """Another ring cannot open it (even under the same kid); a rotated ring still can."""
    token = sealer.seal(CLEARANCE)
    assert ClearanceSealer(CaptchaKeys([("k1", b"2" * 32)])).open(token) is None
    assert ClearanceSealer(CaptchaKeys([("k2", b"2" * 32)])).open(token) is None
    rotated = ClearanceSealer(CaptchaKeys([("k2", b"2" * 32), ("k1", b"1" * 32)]))
    assert rotated.open(token) == CLEARANCE
    assert rotated.seal(CLEARANCE).startswith("c1.k2.")


def test_kid_swap_is_refused() -> None:
    """The key id is authenticated: a token moved under another kid of the same ring fails."""
    ring = CaptchaKeys([("k1", b"1" * 32), ("k2", b"1" * 32)])
    token = ClearanceSealer(ring).seal(CLEARANCE)
    assert ClearanceSealer(ring).open(token.replace("c1.k1.", "c1.k2.")) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=1200) | st.from_regex(r"c1\.k1\.[A-Za-z0-9_-]{0,400}", fullmatch=True))
def test_garbage_opens_to_none(token: str) -> None:
    """Random strings, including well-formed-looking ones, open to None without raising."""
    assert ClearanceSealer(CaptchaKeys([("k1", b"1" * 32)])).open(token) is None


def test_binding_user_vs_anonymous() -> None:
    """Users bind by id; anonymous clients by IP + User-Agent; IPv6 by its /64."""
    user = Principal(id="42", kind="user")
    assert principal_binding(user, "1.2.3.4", b"ua") == "u:42" == principal_binding(user, "5.6.7.8", b"other")
    anon = principal_binding(None, "1.2.3.4", b"ua")
    assert anon.startswith("a:") and anon != principal_binding(None, "1.2.3.5", b"ua")
    assert anon != principal_binding(None, "1.2.3.4", b"ua2")
    assert principal_binding(Principal.anonymous("1.2.3.4"), "1.2.3.4", b"ua") == anon
    assert principal_binding(None, "2001:db8::1", b"ua") == principal_binding(None, "2001:db8::ffff", b"ua")
    assert principal_binding(None, "2001:db8::1", b"ua") != principal_binding(None, "2001:db8:0:1::1", b"ua")
