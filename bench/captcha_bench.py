"""CAPTCHA costs on this machine (not a test): what the server pays to create and verify an
ALTCHA v2 challenge at each level, and the median time a single thread needs to solve one.

The solver is the altcha package's reference solver (PBKDF2 in OpenSSL via hashlib), one thread.
A browser solving with WebCrypto in a Web Worker is typically slower per attempt, so read the
solve column as a floor for real clients. Prints a Markdown table for docs/performance.md
(section "CAPTCHA levels"); the table is not written anywhere by this script.

    .venv/bin/python bench/captcha_bench.py [--solves N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import timeit

import altcha

from captcha.keys import CaptchaKeys
from captcha.pow import PowIssuer
from captcha.settings import DEFAULT_LEVELS
from gateway.core.clock import SystemClock


def best_us(fn: object, number: int, repeat: int = 5) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solves", type=int, default=11, help="solves per level (fewer for the top levels)")
    args = parser.parse_args()
    issuer = PowIssuer(CaptchaKeys([("bench", os.urandom(32))]), SystemClock(), levels=DEFAULT_LEVELS, ttl=600.0)
    print(f"# CAPTCHA levels on {platform.machine()} / {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}")
    print()
    print("| level | cost x counter | create (µs) | verify (µs) | solve median (ms) | solve p90 (ms) | solves |")
    print("|---|---|---|---|---|---|---|")
    for number, level in enumerate(DEFAULT_LEVELS, start=1):
        create = best_us(lambda n=number: issuer.create("bench", n, "a:bench"), number=20)
        samples = max(3, args.solves // (1 if number <= 3 else 2 if number == 4 else 4))
        times: list[float] = []
        payload = None
        for _ in range(samples):
            challenge = altcha.Challenge.from_dict(issuer.create("bench", number, "a:bench"))
            started = time.perf_counter()
            solution = altcha.solve_challenge(challenge, timeout=600)
            times.append((time.perf_counter() - started) * 1000)
            assert solution is not None
            payload = altcha.Payload(challenge, solution).to_dict()
        verify = best_us(lambda p=payload: issuer.check(p), number=200)
        assert issuer.check(payload).outcome == "ok"
        p90 = statistics.quantiles(times, n=10)[-1] if len(times) >= 2 else times[0]
        print(f"| {number} | {level.cost:,} x {level.counter:,} | {create:,.0f} | {verify:,.0f} | "
              f"{statistics.median(times):,.0f} | {p90:,.0f} | {samples} |")


if __name__ == "__main__":
    main()
