"""Key composition: who a limit counts."""

from __future__ import annotations

import json

import pytest

from ratelimit.keys import ParsedBody, client_network, compose_key
from ratelimit.spec import LimitSpec
from tests.ratelimit.conftest import make_ctx, user


def spec(*key: str) -> LimitSpec:
    return LimitSpec.build("lim", "5/minute", key=key)


def test_ipv4_is_kept_whole() -> None:
    """An IPv4 client is keyed by its address, under the spec name."""
    assert compose_key(spec("ip"), make_ctx(ip="198.51.100.9")) == "lim:198.51.100.9"


def test_ipv6_grouped_by_64() -> None:
    """Two IPv6 addresses in one /64 share a key; another /64 does not."""
    a = compose_key(spec("ip"), make_ctx(ip="2001:db8:1:2::1"))
    b = compose_key(spec("ip"), make_ctx(ip="2001:db8:1:2:ffff:ffff:ffff:ffff"))
    c = compose_key(spec("ip"), make_ctx(ip="2001:db8:1:3::1"))
    assert a == b == "lim:2001:db8:1:2::/64"
    assert c != a


def test_ipv4_mapped_ipv6_is_ipv4() -> None:
    """An IPv4-mapped IPv6 address counts as its IPv4 address."""
    assert client_network("::ffff:198.51.100.9") == "198.51.100.9"


def test_user_key_skips_anonymous() -> None:
    """A user key applies to authenticated principals only."""
    assert compose_key(spec("user"), make_ctx()) is None
    assert compose_key(spec("user"), make_ctx(principal=user("alice"))) == "lim:alice"


def test_user_or_ip() -> None:
    """user_or_ip distinguishes users from addresses so they never share a budget."""
    assert compose_key(spec("user_or_ip"), make_ctx(principal=user("alice"))) == "lim:u:alice"
    assert compose_key(spec("user_or_ip"), make_ctx(ip="198.51.100.9")) == "lim:ip:198.51.100.9"


def test_route_and_path_param() -> None:
    """route uses the matched rule; path params are casefolded."""
    ctx = make_ctx(rule_id="posts", path_params={"handle": "Alice"})
    assert compose_key(spec("route", "path:handle"), ctx) == "lim:posts|alice"
    assert compose_key(spec("path:other"), ctx) is None


def test_header_part() -> None:
    """A header part uses the header's value, and None when it is absent."""
    ctx = make_ctx(headers=[(b"x-api-key", b"k-123")])
    assert compose_key(spec("header:X-Api-Key"), ctx) == "lim:k-123"
    assert compose_key(spec("header:x-other"), ctx) is None


@pytest.mark.parametrize(
    "email", ["alice@example.com", " Alice@Example.COM ", "\uff41lice@example.com", "ALICE@EXAMPLE.COM\t"]
)
def test_body_pointer_normalizes(email: str) -> None:
    """Variants of one login email (case, spaces, fullwidth) share one key."""
    ctx = make_ctx(body=json.dumps({"login": {"email": email}}).encode())
    assert compose_key(spec("body:/login/email"), ctx) == "lim:alice@example.com"


@pytest.mark.parametrize("body", [None, b"", b"not json", b"{\"other\": 1}", b"{\"email\": {}}", b"[1,2]", b"\xff\xfe"])
def test_body_pointer_missing_is_none(body: bytes | None) -> None:
    """Absent bodies, non-JSON and absent or structured values give no key."""
    assert compose_key(spec("body:/email"), make_ctx(body=body)) is None


def test_body_pointer_escapes_and_indexes() -> None:
    """RFC 6901: ~1 is '/', ~0 is '~', and array indexes work."""
    ctx = make_ctx(body=b'{"a/b": [{"~k": "X"}]}')
    assert compose_key(spec("body:/a~1b/0/~0k"), ctx) == "lim:x"
    assert compose_key(spec("body:/a~1b/01/~0k"), ctx) is None


def test_body_parsed_once() -> None:
    """One ParsedBody decodes the body once for every spec on the request."""
    ctx = make_ctx(body=b'{"email": "a@b.c"}')
    parsed = ParsedBody(ctx)
    assert compose_key(spec("body:/email"), ctx, parsed) == "lim:a@b.c"
    ctx.body = b"changed"  # a second parse would now fail
    assert compose_key(spec("body:/email"), ctx, parsed) == "lim:a@b.c"


def test_claim_part() -> None:
    """A claim part uses the stringified claim, None when absent or anonymous."""
    ctx = make_ctx(principal=user("alice", tenant=42))
    assert compose_key(spec("claim:tenant"), ctx) == "lim:42"
    assert compose_key(spec("claim:org"), ctx) is None
    assert compose_key(spec("claim:tenant"), make_ctx()) is None


def test_long_values_are_hashed() -> None:
    """Attacker-sized values are replaced by a bounded hash."""
    ctx = make_ctx(headers=[(b"x-k", b"a" * 10_000)])
    key = compose_key(spec("header:x-k"), ctx)
    assert key is not None and len(key) < 64
    assert key.startswith("lim:h:")


def test_separator_in_value_cannot_forge_a_composite() -> None:
    """A value containing the part separator cannot collide with a two-part key."""
    one = compose_key(spec("header:x-a", "header:x-b"), make_ctx(headers=[(b"x-a", b"p|q"), (b"x-b", b"r")]))
    two = compose_key(spec("header:x-a", "header:x-b"), make_ctx(headers=[(b"x-a", b"p"), (b"x-b", b"q|r")]))
    assert one != two
