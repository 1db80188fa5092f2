"""A rate limit, validated once: its rates, strategy, key, cost, exemptions and failure modes.

Plain frozen dataclass (no pydantic): the policy layer maps its model onto it, and every
invalid value raises ``ValueError`` naming the field at load time, never at request time."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from limits import RateLimitItem, parse_many

__all__ = ["FailMode", "LimitSpec", "OnExceed", "Strategy", "parse_key_part", "parse_rates"]

Strategy = Literal["sliding-window", "moving-window", "fixed-window"]
OnExceed = Literal["deny", "challenge", "shadow"]
FailMode = Literal["open", "closed"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

STRATEGIES: frozenset[str] = frozenset({"sliding-window", "moving-window", "fixed-window"})
ON_EXCEED: frozenset[str] = frozenset({"deny", "challenge", "shadow"})
FAIL_MODES: frozenset[str] = frozenset({"open", "closed"})
PLAIN_PARTS: frozenset[str] = frozenset({"ip", "user", "user_or_ip", "route"})

# Names end up in storage keys and in RateLimit headers (sf-string): keep them plain ASCII.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-.]{1,64}$")
_HEADER = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]{1,64}$")  # RFC 9110 token, lower-cased
_POINTER = re.compile(r"^(/([^/~]|~[01])*)+$")  # RFC 6901, at least one reference token


def parse_rates(text: str) -> tuple[RateLimitItem, ...]:
    """``"5/minute; 100/hour"`` → rate items, in the order written. ValueError when invalid."""
    try:
        items = parse_many(text)
    except ValueError as exc:
        raise ValueError(f"rates: invalid rate string {text!r} (expected e.g. '5/minute; 100/hour')") from exc
    if not items:
        raise ValueError(f"rates: no rate in {text!r}")
    for item in items:
        if item.amount < 1:
            raise ValueError(f"rates: amount must be >= 1 in {text!r}")
    return tuple(items)


def parse_key_part(text: str) -> str:
    """Validate one key part and return it in canonical form (header names lower-cased).

    Forms: ``ip``, ``user``, ``user_or_ip``, ``route``, ``path:NAME``, ``header:NAME``,
    ``body:/json/pointer`` (RFC 6901) and ``claim:NAME``."""
    part = text.strip()
    if part in PLAIN_PARTS:
        return part
    kind, sep, arg = part.partition(":")
    if sep:
        if kind in ("path", "claim") and _TOKEN.match(arg):
            return part
        if kind == "header" and _HEADER.match(arg.lower()):
            return "header:" + arg.lower()
        if kind == "body" and _POINTER.match(arg):
            return part
    raise ValueError(
        f"key: invalid key part {text!r} (expected ip, user, user_or_ip, route, path:NAME, "
        "header:NAME, body:/json/pointer or claim:NAME)"
    )


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One named limit. ``rates`` are all enforced: a request is limited if any window is full.

    ``strategy`` defaults to the sliding window counter (two keys with a shared hash tag, so it
    is Redis Cluster safe). ``on_exceed`` decides what an exceeded limit does; ``fail`` what a
    store failure does (``open`` admits with a signal, ``closed`` answers 503)."""

    name: str
    rates: tuple[RateLimitItem, ...]
    key: tuple[str, ...] = ("ip",)
    strategy: Strategy = "sliding-window"
    cost: int = 1
    exempt_roles: frozenset[str] = frozenset()
    exempt_cidrs: tuple[IPNetwork, ...] = ()
    on_exceed: OnExceed = "deny"
    fail: FailMode = "open"
    # Empty: every request counts when checked. Otherwise only requests whose response status is
    # in the set count, charged after the upstream answered (e.g. {401} for failed logins).
    count_on: frozenset[int] = frozenset()
    # derived: the body pointers used by ``key`` (so the guard knows it needs the body)
    needs_body: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} must be 1-64 chars of A-Z a-z 0-9 _ . - (starting alphanumeric)")
        if not self.rates or not all(isinstance(r, RateLimitItem) for r in self.rates):
            raise ValueError(f"rates: limit {self.name!r} needs at least one rate (use parse_rates)")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: {self.strategy!r} is not one of {sorted(STRATEGIES)}")
        if not self.key:
            raise ValueError(f"key: limit {self.name!r} needs at least one key part")
        canonical = tuple(parse_key_part(p) for p in self.key)
        if len(set(canonical)) != len(canonical):
            raise ValueError(f"key: limit {self.name!r} repeats a key part")
        object.__setattr__(self, "key", canonical)
        if isinstance(self.cost, bool) or not isinstance(self.cost, int) or self.cost < 1:
            raise ValueError(f"cost: must be an integer >= 1, got {self.cost!r}")
        if self.cost > min(r.amount for r in self.rates):
            raise ValueError(f"cost: {self.cost} exceeds the smallest quota of limit {self.name!r}")
        if self.on_exceed not in ON_EXCEED:
            raise ValueError(f"on_exceed: {self.on_exceed!r} is not one of {sorted(ON_EXCEED)}")
        if self.fail not in FAIL_MODES:
            raise ValueError(f"fail: {self.fail!r} is not one of {sorted(FAIL_MODES)}")
        object.__setattr__(self, "exempt_roles", frozenset(self.exempt_roles))
        object.__setattr__(self, "exempt_cidrs", _networks(self.exempt_cidrs))
        object.__setattr__(self, "needs_body", any(p.startswith("body:") for p in canonical))

    @classmethod
    def build(
        cls,
        name: str,
        rates: str,
        *,
        key: Iterable[str] = ("ip",),
        strategy: Strategy = "sliding-window",
        cost: int = 1,
        exempt_roles: Iterable[str] = (),
        exempt_cidrs: Iterable[str | IPNetwork] = (),
        on_exceed: OnExceed = "deny",
        fail: FailMode = "open",
        count_on: Iterable[int] = (),
    ) -> LimitSpec:
        """Convenience constructor from plain strings (``rates="5/minute; 100/hour"``)."""
        return cls(
            name=name,
            rates=parse_rates(rates),
            key=tuple(key),
            strategy=strategy,
            cost=cost,
            exempt_roles=frozenset(exempt_roles),
            exempt_cidrs=_networks(exempt_cidrs),
            on_exceed=on_exceed,
            fail=fail,
            count_on=frozenset(count_on),
        )


def _networks(values: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for value in values:
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(value)
            continue
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise ValueError(f"exempt_cidrs: invalid network {value!r}") from exc
    return tuple(out)
