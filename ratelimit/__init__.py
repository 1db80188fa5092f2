"""Rate limits for tsgate: exact, shared (Redis) or bounded (memory), explainable (RateLimit headers).

``LimitSpec`` says what is limited, ``compose_key`` who is counted, ``Limiter`` counts (storage
chosen by URL, bounded by a timeout and a circuit breaker), ``RateLimitGuard`` decides."""

from __future__ import annotations

from ratelimit.breaker import CircuitBreaker
from ratelimit.guard import RateLimitGuard
from ratelimit.headers import rate_limit_headers, retry_after
from ratelimit.keys import ParsedBody, compose_key
from ratelimit.limiter import Limiter, LimitResult
from ratelimit.spec import LimitSpec, parse_key_part, parse_rates

__all__ = [
    "CircuitBreaker",
    "LimitResult",
    "LimitSpec",
    "Limiter",
    "ParsedBody",
    "RateLimitGuard",
    "compose_key",
    "parse_key_part",
    "parse_rates",
    "rate_limit_headers",
    "retry_after",
]
