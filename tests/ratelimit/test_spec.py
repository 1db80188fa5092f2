"""LimitSpec and key-part validation."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratelimit.spec import LimitSpec, parse_key_part, parse_rates


def test_parse_rates_keeps_every_window() -> None:
    """A rate string with several windows yields one item per window, in order."""
    rates = parse_rates("5/minute; 100/hour")
    assert [(r.amount, r.get_expiry()) for r in rates] == [(5, 60), (100, 3600)]


@pytest.mark.parametrize("text", ["", "five/minute", "5/fortnight", "0/minute"])
def test_parse_rates_rejects_invalid(text: str) -> None:
    """Invalid rate strings fail with a ValueError naming the field."""
    with pytest.raises(ValueError, match="rates"):
        parse_rates(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("ip", "ip"),
        ("user", "user"),
        ("user_or_ip", "user_or_ip"),
        ("route", "route"),
        ("path:handle", "path:handle"),
        ("header:X-Api-Key", "header:x-api-key"),
        ("body:/email", "body:/email"),
        ("body:/a~1b/0", "body:/a~1b/0"),
        ("claim:tenant", "claim:tenant"),
    ],
)
def test_parse_key_part_accepts_forms(text: str, canonical: str) -> None:
    """Each documented key-part form is accepted in canonical form."""
    assert parse_key_part(text) == canonical


@pytest.mark.parametrize(
    "text", ["", "ipv6", "path:", "header:bad name", "body:email", "body:/a~2", "claim:a b", "x:y"]
)
def test_parse_key_part_rejects_others(text: str) -> None:
    """Anything else is a ValueError naming the key field."""
    with pytest.raises(ValueError, match="key"):
        parse_key_part(text)


@given(st.text(max_size=30))
def test_parse_key_part_is_idempotent(text: str) -> None:
    """Whatever the input, a result is canonical: parsing it again returns it unchanged."""
    try:
        part = parse_key_part(text)
    except ValueError:
        return
    assert parse_key_part(part) == part


def test_spec_build_normalizes() -> None:
    """build() parses rates and CIDRs and derives needs_body from the key."""
    spec = LimitSpec.build("login", "5/minute", key=("body:/email",), exempt_cidrs=["10.0.0.0/8"])
    assert spec.needs_body
    assert spec.exempt_cidrs == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "bad name"}, "name"),
        ({"cost": 0}, "cost"),
        ({"cost": 6}, "cost"),
        ({"strategy": "token-bucket"}, "strategy"),
        ({"on_exceed": "ban"}, "on_exceed"),
        ({"fail": "maybe"}, "fail"),
        ({"key": ()}, "key"),
        ({"key": ("ip", "ip")}, "key"),
        ({"exempt_cidrs": ["10.0.0.300/8"]}, "exempt_cidrs"),
    ],
)
def test_spec_rejects_bad_fields(kwargs: dict[str, object], field: str) -> None:
    """Bad configuration fails at construction with a message naming the field."""
    args: dict[str, object] = {"name": "n", "rates": "5/minute", **kwargs}
    with pytest.raises(ValueError, match=field):
        LimitSpec.build(**args)  # type: ignore[arg-type]
