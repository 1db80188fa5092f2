"""Client IP resolution through trusted proxies.

The client is the right-most address in ``X-Forwarded-For`` that is not a trusted proxy, and only
when the TCP peer itself is trusted; otherwise it is the TCP peer. Left-most entries are whatever
the client chose to send and are never believed."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["TrustedProxies", "parse_ip"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IPAddress | None:
    """An address from a header entry, or None when it is not one (ports and brackets removed)."""
    text = text.strip()
    if text.startswith("["):  # "[2001:db8::1]:443"
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # "203.0.113.7:5000"
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class TrustedProxies:
    """A set of CIDRs whose ``X-Forwarded-For`` we believe."""

    __slots__ = ("_cache", "networks")

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self._cache: dict[str, bool] = {}

    def trusts(self, ip: str) -> bool:
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        addr = parse_ip(ip)
        trusted = addr is not None and any(addr in net for net in self.networks)
        if len(self._cache) > 4096:  # bounded: distinct peers are attacker-chosen
            self._cache.clear()
        self._cache[ip] = trusted
        return trusted

    def client_ip(self, peer: str, forwarded_for: list[bytes]) -> str:
        """Resolve the client address from the TCP peer and every X-Forwarded-For header."""
        if not self.networks or not forwarded_for or not self.trusts(peer):
            return peer
        hops: list[str] = []
        for value in forwarded_for:
            hops.extend(part.strip() for part in value.decode("latin-1").split(","))
        client = peer
        for hop in reversed(hops):
            addr = parse_ip(hop)
            if addr is None:  # garbage: the hop to its right is the last one we can vouch for
                return client
            client = str(addr)
            if not self.trusts(client):
                return client
        return client
