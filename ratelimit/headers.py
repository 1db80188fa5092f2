"""RateLimit header fields, draft-ietf-httpapi-ratelimit-headers-10.

Both fields are Structured Field Lists (RFC 9651) of Strings naming a policy, with parameters::

    RateLimit-Policy: "login";q=5;w=60, "login-daily";q=100;w=3600
    RateLimit: "login";r=0;t=42

``q`` is the quota and ``w`` the window in seconds; ``r`` the remaining quota and ``t`` the
seconds until it resets. The most restrictive policy comes first and ``RateLimit`` describes it.
``Retry-After`` (RFC 9110) is rounded up, so a client that obeys it never retries before the reset."""

from __future__ import annotations

import math

from ratelimit.limiter import LimitResult
from ratelimit.spec import LimitSpec

__all__ = ["rate_limit_headers", "retry_after", "sf_string"]


def sf_string(text: str) -> str:
    """Serialize an sf-string (printable ASCII; ``"`` and ``\\`` escaped)."""
    if any(not (0x20 <= ord(c) <= 0x7E) for c in text):
        raise ValueError(f"not serializable as a structured-field string: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _policy_name(spec: LimitSpec, index: int) -> str:
    return spec.name if len(spec.rates) == 1 or index == 0 else f"{spec.name}-{index}"


def _order(result: LimitResult) -> tuple[int, int, float]:
    return (0 if not result.allowed else 1, result.remaining, -result.reset_after)


def rate_limit_headers(results: list[tuple[LimitSpec, LimitResult]]) -> list[tuple[str, str]]:
    """``RateLimit-Policy`` and ``RateLimit`` for the checked specs (errored checks are skipped).

    Every rate of every spec is one policy member: the spec name for its first rate and
    ``name-i`` for the others. The spec whose result is most restrictive (refused first, then
    fewest remaining) leads the list, its reported rate first."""
    usable = [(spec, result) for spec, result in results if result.error is None]
    if not usable:
        return []
    usable.sort(key=lambda pair: _order(pair[1]))
    members: list[str] = []
    current = ""
    for position, (spec, result) in enumerate(usable):
        indexed = list(enumerate(spec.rates))
        indexed.sort(key=lambda pair: pair[1] != result.limit)  # the reported rate first (stable)
        for index, rate in indexed:
            name = sf_string(_policy_name(spec, index))
            members.append(f"{name};q={rate.amount};w={rate.get_expiry()}")
            if position == 0 and rate == result.limit and not current:
                current = f"{name};r={max(0, result.remaining)};t={math.ceil(result.reset_after)}"
    headers = [("RateLimit-Policy", ", ".join(members))]
    if current:
        headers.append(("RateLimit", current))
    return headers


def retry_after(result: LimitResult) -> str:
    """Delay-seconds for ``Retry-After``: rounded up and at least 1, never before the reset."""
    return str(max(1, math.ceil(result.reset_after)))
