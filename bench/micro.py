"""Micro benchmarks (not tests): costs of single operations on this machine, appended to
docs/performance.md by `make bench`. Timings are best-of-N with timeit; the machine is shared,
so read them as orders of magnitude and compare within one run."""

from __future__ import annotations

import asyncio
import sys
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from authn.keys import SigningKeyRing
from authn.passwords import PROFILES, PasswordHasher
from authn.tokens import AccessTokens, Assertions
from gateway.core.paths import canonicalize
from policies.matcher import RouteMatcher
from ratelimit.limiter import Limiter
from ratelimit.spec import LimitSpec

DOCS = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def best_us(fn: Callable[[], object], number: int = 2000, repeat: int = 5) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _token_rows(alg: str) -> list[str]:
    ring = SigningKeyRing.generate(alg)  # type: ignore[arg-type]
    cold = AccessTokens(ring, issuer="tsgate", audience="tsgate", cache_size=0)
    warm = AccessTokens(ring, issuer="tsgate", audience="tsgate")
    token, _ = warm.issue("user-1", ["user"], "sid-1")
    warm.verify(token)
    assertions = Assertions(ring, issuer="tsgate")
    return [
        f"| JWT verify {alg}, cold (signature checked) | {best_us(lambda: cold.verify(token), 500):.1f} µs |",
        f"| JWT verify {alg}, cached (kid+jti) | {best_us(lambda: warm.verify(token)):.1f} µs |",
        f"| JWT issue {alg} | {best_us(lambda: warm.issue('u', ['user'], 's'), 500):.1f} µs |",
        f"| X-Tsgate-Assertion sign {alg} | "
        f"{best_us(lambda: assertions.issue('u', ['user'], 'd', 'low', 'upstream'), 500):.1f} µs |",
    ]


def token_rows() -> list[str]:
    return [row for alg in ("EdDSA", "ES256") for row in _token_rows(alg)]


def request_path_rows() -> list[str]:
    matcher = RouteMatcher([(f"/api/v1/r{i}/{{id}}", ["GET"]) for i in range(300)] + [("/**", None)])
    return [
        f"| path canonicalization (uncached) | {best_us(lambda: canonicalize(b'/api/v1/r7/abc%20d//x')):.2f} µs |",
        f"| route match, 300 routes (uncached) | {best_us(lambda: matcher._match('GET', '/api/v1/r277/x')):.2f} µs |",
    ]


async def ratelimit_rows() -> list[str]:
    """Cost of one limit decision (hit + window state), sequential and 100 at a time."""
    rows = []
    spec = LimitSpec.build("bench", "100000000/minute", key=["ip"])
    for label, url in (("memory", "memory://"), ("Redis", "redis://127.0.0.1:6379/14")):
        limiter = Limiter(url, timeout=2.0, key_prefix="tsgate-bench-micro")
        try:
            first = await limiter.check(spec, "bench:k")
            if first.error is not None:
                rows.append(f"| rate-limit decision, {label} | unavailable ({first.error}) |")
                continue
            n = 500
            t0 = time.perf_counter()
            for _ in range(n):
                await limiter.check(spec, "bench:k")
            sequential = (time.perf_counter() - t0) / n * 1e6
            t0 = time.perf_counter()
            for _ in range(5):
                await asyncio.gather(*(limiter.check(spec, "bench:k") for _ in range(100)))
            concurrent = (time.perf_counter() - t0) / 500 * 1e6
            rows.append(f"| rate-limit decision, {label}, one at a time (1 Lua call on Redis) | {sequential:.0f} µs |")
            rows.append(f"| rate-limit decision, {label}, 100 in flight (per decision) | {concurrent:.0f} µs |")
        finally:
            await limiter.clear(spec, "bench:k")
            await limiter.aclose()
    return rows


async def argon_rows() -> list[str]:
    rows = []
    for name, profile in PROFILES.items():
        hasher = PasswordHasher(profile, max_concurrency=2, max_queue=1000)
        stored = await hasher.hash("violet tangerine orbit forty-two")
        t0 = time.perf_counter()
        for _ in range(5):
            await hasher.verify(stored, "violet tangerine orbit forty-two")
        one = (time.perf_counter() - t0) / 5 * 1000
        t0 = time.perf_counter()
        n = 40
        await asyncio.gather(*(hasher.verify(stored, "violet tangerine orbit forty-two") for _ in range(n)))
        rate = n / (time.perf_counter() - t0)
        hasher.close()
        rows.append(f"| argon2id `{name}` verify (one login) | {one:.1f} ms |")
        rows.append(f"| argon2id `{name}` logins/s (2 hashing threads) | {rate:.0f} /s |")
    return rows


def main() -> int:
    rows = ["| operation | cost |", "|---|---|", *token_rows(), *request_path_rows(),
            *asyncio.run(ratelimit_rows()), *asyncio.run(argon_rows())]
    section = (f"\n### Micro benchmarks — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
               f"Command: `.venv/bin/python bench/micro.py`\n\n" + "\n".join(rows) + "\n")
    print(section)
    if "--no-docs" not in sys.argv:
        with DOCS.open("a", encoding="utf-8") as docs:
            docs.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
