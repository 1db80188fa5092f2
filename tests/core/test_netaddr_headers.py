"""Client IP resolution through trusted proxies, and inbound header hygiene."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.netaddr import TrustedProxies, parse_ip
from gateway.proxy.headers import filter_response_headers, read_inbound


def test_untrusted_peer_xff_is_ignored() -> None:
    """A client that is not a trusted proxy cannot choose its address with X-Forwarded-For."""
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert trusted.client_ip("203.0.113.9", [b"1.2.3.4"]) == "203.0.113.9"


def test_right_most_untrusted_hop_wins() -> None:
    """Through trusted proxies the client is the right-most untrusted hop, not the left-most."""
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert trusted.client_ip("10.0.0.2", [b"6.6.6.6, 198.51.100.7, 10.0.0.5"]) == "198.51.100.7"
    assert trusted.client_ip("10.0.0.2", [b"6.6.6.6", b"198.51.100.7"]) == "198.51.100.7"


def test_garbage_hop_stops_the_walk() -> None:
    """An unparsable hop ends the walk at the last address we can vouch for."""
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert trusted.client_ip("10.0.0.2", [b"1.1.1.1, not-an-ip, 10.0.0.7"]) == "10.0.0.7"
    assert trusted.client_ip("10.0.0.2", [b"not-an-ip"]) == "10.0.0.2"


def test_all_trusted_chain_gives_left_most() -> None:
    """When every hop is trusted, the left-most one is the client."""
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert trusted.client_ip("10.0.0.2", [b"10.1.1.1, 10.2.2.2"]) == "10.1.1.1"


def test_parse_ip_forms() -> None:
    """Ports, brackets and IPv4-mapped IPv6 are normalized; junk is None."""
    assert str(parse_ip("[2001:db8::1]:443")) == "2001:db8::1"
    assert str(parse_ip("203.0.113.7:5000")) == "203.0.113.7"
    assert str(parse_ip("::ffff:198.51.100.1")) == "198.51.100.1"
    assert parse_ip("example.com") is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=4), st.sampled_from(["10.0.0.2", "203.0.113.1"]))
def test_xff_parsing_never_raises(values: list[bytes], peer: str) -> None:
    """Arbitrary X-Forwarded-For bytes resolve to an address string, never an exception."""
    trusted = TrustedProxies(["10.0.0.0/8"])
    result = trusted.client_ip(peer, values)
    assert parse_ip(result) is not None


def test_inbound_hygiene_drops_identity_and_hop_by_hop() -> None:
    """X-Tsgate-*, forwarding, override and hop-by-hop headers never pass; Connection-named ones go too."""
    inbound = read_inbound([
        (b"host", b"example.com"),
        (b"x-tsgate-user", b"admin"),
        (b"x-tsgate-roles", b"admin"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"x-real-ip", b"1.2.3.4"),
        (b"x-original-url", b"/admin"),
        (b"x-http-method-override", b"DELETE"),
        (b"connection", b"keep-alive, X-Custom-Secret"),
        (b"x-custom-secret", b"s"),
        (b"keep-alive", b"timeout=5"),
        (b"te", b"trailers"),
        (b"accept", b"application/json"),
        (b"authorization", b"Bearer t"),
    ])
    names = [n for n, _ in inbound.kept]
    assert names == [b"accept", b"authorization"]
    assert inbound.host == b"example.com"
    assert inbound.forwarded_for == [b"1.2.3.4"]


def test_conflicting_content_length_is_flagged() -> None:
    """Two Content-Length headers, or a non-numeric one, mark the request ambiguous."""
    assert read_inbound([(b"content-length", b"5"), (b"content-length", b"6")]).bad_content_length
    assert read_inbound([(b"content-length", b"+5")]).bad_content_length
    assert not read_inbound([(b"content-length", b"5")]).bad_content_length


def test_response_hop_by_hop_removed() -> None:
    """The upstream's hop-by-hop headers, and the ones it names in Connection, are not relayed."""
    out = filter_response_headers([
        (b"content-type", b"text/plain"), (b"connection", b"close, x-internal"), (b"x-internal", b"1"),
        (b"transfer-encoding", b"chunked"), (b"keep-alive", b"timeout=4"),
    ])
    assert out == [(b"content-type", b"text/plain")]


header_names = st.sampled_from([b"host", b"connection", b"content-length", b"transfer-encoding", b"x-tsgate-user",
                                b"x-forwarded-for", b"x-a", b"cookie", b"upgrade", b"keep-alive"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(header_names, st.binary(max_size=30)), max_size=12))
def test_inbound_hygiene_properties(headers: list[tuple[bytes, bytes]]) -> None:
    """Whatever the client sends, no kept header is identity, forwarding, framing or hop-by-hop,
    and every kept header was sent by the client in the same order."""
    inbound = read_inbound(headers)
    for name, _ in inbound.kept:
        assert not name.startswith(b"x-tsgate-")
        assert name not in (b"host", b"connection", b"content-length", b"transfer-encoding", b"x-forwarded-for",
                            b"upgrade", b"keep-alive")
    it = iter(headers)
    assert all(any(pair == sent for sent in it) for pair in inbound.kept)
