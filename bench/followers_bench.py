"""Fake-follower detection costs and quality on this machine (not a test).

1. Ingest: follow events per second through ``FollowDetection.observe`` (risk + burst +
   lockstep), single core, on a simulated stream; and through the guard's after-response path
   (event built, appended to the in-process log, detectors fed, findings applied).
2. Batch scan: FRAUDAR peeling (3 blocks) over a synthetic power-law follow graph of ``--edges``
   edges with a planted pool; graph building from arrays is timed apart from the peeling.
3. Eval: ``tsgate followers eval`` numbers per attack kind for several simulator seeds.

Prints Markdown for docs/performance.md (section "Follower detection").

    .venv/bin/python bench/followers_bench.py [--edges 10000000] [--seeds 7,11,23]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time

import numpy as np
import scipy.sparse as sp

from followers.actions import FollowActions, LabelStore
from followers.config import ActionSettings, FollowRoute
from followers.engine import FollowDetection
from followers.evaluate import replay, score
from followers.eventlog import MemoryEventLog
from followers.events import event_to_json, read_events
from followers.guard import FollowGuard
from followers.scan import FollowGraph, fraudar, graph_from_events
from followers.simulate import ATTACK_KINDS, SimConfig, simulate
from gateway.core.clock import FrozenClock
from gateway.core.context import Principal, RequestContext
from gateway.core.services import GuardServices
from gateway.core.state.memory import MemoryStore


def ingest(events: list) -> float:
    engine = FollowDetection()
    started = time.perf_counter()
    for event in events:
        engine.observe(event)
    return len(events) / (time.perf_counter() - started)


async def guard_ingest(events: list) -> float:
    clock = FrozenClock()
    store = MemoryStore("memory://?max_keys=1000000", clock=clock)
    labels = LabelStore(store)
    guard = FollowGuard(FollowRoute(), ActionSettings(), GuardServices(store, clock), engine=FollowDetection(),
                        log=MemoryEventLog(1_000_000), actions=FollowActions(labels, None, label_ttl_s=3600),
                        labels=labels)
    started = time.perf_counter()
    for i, event in enumerate(events):
        if event.action != "follow":
            continue
        ctx = RequestContext(decision_id=str(i), method="POST", path="/", query=b"",
                             headers=[(b"user-agent", event.ua.encode())], client_ip="203.0.113.9", scheme="http",
                             path_params={"username": event.target},
                             principal=Principal(id=event.actor, kind="user",
                                                 claims={"created_at": event.actor_created}))
        clock.advance(max(0.0, event.ts - clock.now()))
        await guard.check(ctx)
        for hook in ctx.after_response:
            await hook(200)
    return len(events) / (time.perf_counter() - started)


def synthetic_graph(edges: int, seed: int = 1) -> tuple[FollowGraph, float]:
    rng = np.random.default_rng(seed)
    actors = max(1000, edges // 20)
    targets = max(1000, edges // 50)
    started = time.perf_counter()
    drawn = int(edges * 1.35)  # duplicates collapse; draw extra so about `edges` distinct remain
    rows = rng.integers(0, actors, drawn)
    cols = np.minimum((rng.pareto(1.1, drawn) * 10).astype(np.int64), targets - 1)
    # A planted pool: 2000 accounts x 100 targets, 20 follows each.
    pool = rng.integers(0, actors, 2000)
    rows[:40_000] = np.repeat(pool, 20)
    cols[:40_000] = rng.integers(targets - 100, targets, 40_000)
    matrix = sp.csr_matrix((np.ones(drawn), (rows, cols)), shape=(actors, targets))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    prior = rng.random(actors) * 0.5
    graph = FollowGraph(matrix, [f"a{i}" for i in range(actors)], [f"t{j}" for j in range(targets)], prior)
    return graph, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=10_000_000)
    parser.add_argument("--seeds", default="7,11,23")
    args = parser.parse_args()
    print(f"# Follower detection on {platform.machine()} / {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}\n")

    sim = simulate(SimConfig(seed=7))
    events = [e for e, _, _ in sim.events]
    rates = [ingest(events) for _ in range(3)]
    guard_rate = asyncio.run(guard_ingest(events))
    print("| ingest path (one core) | events/s |\n|---|---|")
    print(f"| detectors only (`FollowDetection.observe`, {len(events):,} simulated events, best of 3) | "
          f"{max(rates):,.0f} |")
    print(f"| guard check + after-response (label read, event, memory log, detectors, labels) | {guard_rate:,.0f} |")

    graph, build_s = synthetic_graph(args.edges)
    started = time.perf_counter()
    blocks = fraudar(graph, blocks=3)
    peel_s = time.perf_counter() - started
    print(f"\n| batch scan | edges | accounts | targets | build s | peel (3 blocks) s | first block |\n"
          f"|---|---|---|---|---|---|---|\n| FRAUDAR, eps 0.05 | {graph.edges:,} | {len(graph.actors):,} | "
          f"{len(graph.targets):,} | {build_s:.1f} | {peel_s:.1f} | "
          f"{len(blocks[0].actors) if blocks else 0} x {len(blocks[0].targets) if blocks else 0} |")
    if graph.edges < 10_000_000:
        print(f"\n(10M edges extrapolated linearly: ~{peel_s * 10_000_000 / graph.edges:.0f} s of peeling)")
    # The CLI's end-to-end path: JSONL parsing and the risk replay that seeds the priors.
    lines = [event_to_json(e, ip=ip, user_agent=ua) for e, ip, ua in sim.events]
    started = time.perf_counter()
    parsed = list(read_events(lines))
    parse_s = time.perf_counter() - started
    started = time.perf_counter()
    small = graph_from_events(parsed)
    graph_s = time.perf_counter() - started
    per_10m = (parse_s + graph_s) / len(parsed) * 10_000_000
    print(f"\n`tsgate followers scan` front end on {len(parsed):,} events ({small.edges:,} edges): JSONL parse "
          f"{len(parsed) / parse_s:,.0f} events/s, graph + risk priors {len(parsed) / graph_s:,.0f} events/s "
          f"-> ~{per_10m / 60:.1f} min per 10M events before peeling (extrapolated).")

    print("\n| seed | posts | " + " | ".join(f"{k} P/R/F1" for k in ATTACK_KINDS) +
          " | burst TTD s | fast kinds TTD s | FF/100k honest | viral FF/100k | viral targets flagged |")
    print("|---" * (len(ATTACK_KINDS) + 7) + "|")
    for seed in (int(s) for s in args.seeds.split(",")):
        for posts in (False, True):
            run = simulate(SimConfig(seed=seed, with_posts=posts))
            watch = {o["target"] for o in run.labels["orders"]}
            report = score(replay([e for e, _, _ in run.events], watch_targets=watch), run.labels)
            cells = []
            for kind in ATTACK_KINDS:
                row = report["by_kind"].get(kind)
                cells.append("-" if row is None else f"{row['precision']:.2f}/{row['recall']:.2f}/{row['f1']:.2f}")
            ttd = [report["by_kind"][k]["median_time_to_detect_s"] for k in ("burst", "shared_infra", "hijacked")
                   if report["by_kind"].get(k, {}).get("median_time_to_detect_s") is not None]
            burst_ttd = report["by_kind"].get("burst", {}).get("median_time_to_detect_s")
            print(f"| {seed} | {'yes' if posts else 'no'} | " + " | ".join(cells) +
                  f" | {burst_ttd if burst_ttd is not None else '-'} | {statistics.median(ttd) if ttd else '-'} | "
                  f"{report['false_flags_per_100k_honest']} | "
                  f"{report['viral']['false_flags_per_100k_honest']} | {report['viral']['targets_flagged']}"
                  f"/{report['viral']['spikes']} |")


if __name__ == "__main__":
    main()
