"""Moderation scoring cost (not a test): per-item latency p50/p99 and items/s on one core.

Rows:
* ``content scoring``: normalize + the default model + links + text symbols + a keyword and a
  regex bank + the verdict, on ~2 KB items (what ``ModerationGuard`` computes from the text);
* ``guard.check (memory://)``: the whole guard on a JSON body, including extraction and the
  state checks (near-duplicate LSH windows, repeats, velocity) on an in-process store.

Items are generated (no data set needed): a mix of ordinary comments and spam with links,
homoglyphs, leetspeak and zero-width characters, each padded to ~2 KB. Run:
``.venv/bin/python bench/moderation_bench.py`` (``--items N``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time

from gateway.core.clock import SystemClock
from gateway.core.context import Principal, RequestContext
from gateway.core.services import GuardServices
from gateway.core.state import MemoryStore
from moderation.config import ContentFields, KeywordBankSpec, ModerationSettings, RegexBankSpec, Thresholds
from moderation.guard import ModerationGuard
from moderation.model import load_default_model
from moderation.normalize import normalize
from moderation.scoring import ContentScorer, verdict

HAM = [
    "I read the whole article and I think the author misses the point about public transport funding.",
    "Thanks for sharing! We tried this recipe last night and the kids loved it, though we used less salt.",
    "Does anyone know whether the meetup on Thursday is still happening? The page still shows last month.",
    "Great write-up. One question: how did you measure the latency, with a warm cache or a cold one?",
]
SPAM = [
    "WINNER!! You have been selected for a FREE iPhone. Claim now at bit.ly/fr33-ph0ne before midnight!",
    "Earn $5000 a week from home!!! No experience needed, visit hxxp://cash-fast[.]xyz and sign up today",
    "Fr\u0435\u0435 c\u0430sh b0nus for y0u, c\u200blick www.bonus-cl4im.top now, limited offer, txt WIN to 80086",
]


def make_items(count: int, size: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    items = []
    for i in range(count):
        pool = SPAM if i % 4 == 0 else HAM
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < size:
            parts.append(rng.choice(pool if rng.random() < 0.7 else HAM))
        items.append(" ".join(parts)[:size])
    return items


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def settings() -> ModerationSettings:
    return ModerationSettings(
        content=ContentFields(("/comment/body",)),
        thresholds=Thresholds(flag=5, hold=None, block=15),
        keyword_banks=(KeywordBankSpec("scam", ("free cash", "claim now", "wire transfer", "crypto giveaway"), 3.0),),
        regex_banks=(RegexBankSpec("phone", (r"\b0[0-9]{9,10}\b", r"txt [a-z]+ to [0-9]{4,6}"), 2.0),),
    )


def bench_content(items: list[str]) -> tuple[float, float, float]:
    model = load_default_model()
    config = settings()
    scorer = ContentScorer(config, model)
    for text in items[:50]:  # warm caches (confusable and word tables, numpy power tables)
        verdict(scorer.score(normalize(text)), config)
    samples = []
    started = time.perf_counter()
    for text in items:
        t0 = time.perf_counter()
        verdict(scorer.score(normalize(text)), config)
        samples.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    p50, p99 = percentiles(samples)
    return p50 * 1e3, p99 * 1e3, len(items) / elapsed


async def bench_guard(items: list[str]) -> tuple[float, float, float]:
    store = MemoryStore()
    guard = ModerationGuard(settings(), GuardServices(store, SystemClock()), model=load_default_model())
    bodies = [json.dumps({"comment": {"body": text}}).encode() for text in items]
    samples = []
    started = time.perf_counter()
    for i, body in enumerate(bodies):
        ctx = RequestContext(decision_id=f"d{i}", method="POST", path="/api/articles/x/comments", query=b"",
                             headers=[(b"content-type", b"application/json")], client_ip="192.0.2.1", scheme="http",
                             principal=Principal(id=f"user-{i % 500}", kind="user"), body=body)
        t0 = time.perf_counter()
        await guard.check(ctx)
        samples.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    await store.close()
    p50, p99 = percentiles(samples)
    return p50 * 1e3, p99 * 1e3, len(items) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--size", type=int, default=2048, help="characters per item")
    args = parser.parse_args()
    items = make_items(args.items, args.size)
    print(f"## Moderation scoring ({args.items} items of {args.size} chars, one process)")
    print("| path | p50 ms | p99 ms | items/s |")
    print("|---|---:|---:|---:|")
    p50, p99, rate = bench_content(items)
    print(f"| content scoring (normalize + model + links + banks + verdict) | {p50:.3f} | {p99:.3f} | {rate:,.0f} |")
    p50, p99, rate = asyncio.run(bench_guard(items))
    print(f"| guard.check, JSON body, memory:// state | {p50:.3f} | {p99:.3f} | {rate:,.0f} |")
    print("targets: p99 <= 5 ms per 2 KB item, >= 2,000 items/s per core")


if __name__ == "__main__":
    main()
