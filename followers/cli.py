"""``tsgate followers ...``: simulate, evaluate and scan follow-event streams.

* ``simulate --out DIR [--seed --accounts --days --orders-per-kind --posts]``: write
  ``events.jsonl`` and ``labels.json`` (docs/followers-events.md);
* ``eval --events FILE --labels FILE [--json]``: replay through the gateway's detectors and
  print precision/recall/F1 per attack kind, median time to detect and false flags per 100k
  honest accounts;
* ``scan --events FILE [--blocks N] [--since TS] [--json]``: FRAUDAR dense-block scan.

Errors are one line on stderr and exit status 1, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from followers.errors import FollowersError

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add ``followers`` and its subcommands to the ``tsgate`` argument parser."""
    followers = subparsers.add_parser("followers", help="fake-follower detection: simulate, evaluate, scan")
    sub = followers.add_subparsers(dest="followers_command", required=True)

    sim = sub.add_parser("simulate", help="write a simulated follow-event stream with labelled attacks")
    sim.add_argument("--out", required=True, help="directory for events.jsonl and labels.json")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--accounts", type=int, default=20_000, help="honest accounts (default 20000)")
    sim.add_argument("--days", type=float, default=3.0)
    sim.add_argument("--orders-per-kind", type=int, default=3)
    sim.add_argument("--order-min", type=int, default=200)
    sim.add_argument("--order-max", type=int, default=1000)
    sim.add_argument("--viral-spikes", type=int, default=None, help="default: as many as orders")
    sim.add_argument("--posts", action="store_true", help="include actor_posts (as a profile lookup would)")

    ev = sub.add_parser("eval", help="replay events through the detectors and score them against labels")
    ev.add_argument("--events", required=True)
    ev.add_argument("--labels", required=True)
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    scan = sub.add_parser("scan", help="FRAUDAR dense-subgraph scan of the follow graph")
    scan.add_argument("--events", required=True)
    scan.add_argument("--blocks", type=int, default=3)
    scan.add_argument("--since", type=float, default=None, help="only edges from this epoch time on")
    scan.add_argument("--eps", type=float, default=0.05, help="peeling step (smaller: tighter, slower)")
    scan.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    try:
        command = args.followers_command
        if command == "simulate":
            return _simulate(args)
        if command == "eval":
            return _eval(args)
        return _scan(args)
    except FollowersError as exc:
        print(f"tsgate followers: {exc}", file=sys.stderr)
        return 1


def _simulate(args: argparse.Namespace) -> int:
    from followers.simulate import SimConfig, simulate, write_simulation

    for name in ("accounts", "orders_per_kind", "order_min", "order_max"):
        if getattr(args, name) < 1:
            raise _usage(f"--{name.replace('_', '-')} must be at least 1")
    if args.days <= 1:
        raise _usage("--days must be more than 1 (the first day is the detectors' warm-up)")
    if args.order_min > args.order_max:
        raise _usage("--order-min must not exceed --order-max")
    cfg = SimConfig(seed=args.seed, accounts=args.accounts, days=args.days, orders_per_kind=args.orders_per_kind,
                    order_min=args.order_min, order_max=args.order_max, viral_spikes=args.viral_spikes,
                    with_posts=args.posts)
    sim = simulate(cfg)
    events, labels = write_simulation(sim, args.out)
    print(f"wrote {len(sim.events)} events to {events} and {len(sim.labels['accounts'])} labelled accounts "
          f"to {labels}")
    return 0


def _usage(message: str) -> FollowersError:
    return FollowersError(message)


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'kind':<14}{'precision':>10}{'recall':>9}{'F1':>8}{'median TTD s':>14}{'orders':>8}"]
    for kind, row in report["by_kind"].items():
        ttd = row["median_time_to_detect_s"]
        orders = f"{row.get('orders_detected', '?')}/{row.get('orders_detected', 0) + row.get('orders_missed', 0)}"
        lines.append(f"{kind:<14}{row['precision']:>10.3f}{row['recall']:>9.3f}{row['f1']:>8.3f}"
                     f"{'-' if ttd is None else f'{ttd:.0f}':>14}{orders:>8}")
    o = report["overall"]
    ttd = o["median_time_to_detect_s"]
    lines.append(f"{'overall':<14}{o['precision']:>10.3f}{o['recall']:>9.3f}{o['f1']:>8.3f}"
                 f"{'-' if ttd is None else f'{ttd:.0f}':>14}")
    viral = report.get("viral", {})
    lines.append(f"false flags per 100k honest accounts: {report['false_flags_per_100k_honest']} "
                 f"({report.get('false_flags', '?')} of {report.get('honest_accounts', '?')}); on viral spikes: "
                 f"{viral.get('false_flags_per_100k_honest', '?')} ({viral.get('targets_flagged', '?')} of "
                 f"{viral.get('spikes', '?')} viral targets flagged)")
    return "\n".join(lines)


def _eval(args: argparse.Namespace) -> int:
    from followers.evaluate import evaluate

    try:
        report = evaluate(args.events, args.labels)
    except OSError as exc:
        raise FollowersError(str(exc)) from exc
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(format_table(report))
    return 0


def _scan(args: argparse.Namespace) -> int:
    from followers.events import read_events
    from followers.scan import block_summary, scan_events

    if args.blocks < 1:
        raise _usage("--blocks must be at least 1")
    if not 0 < args.eps < 1:
        raise _usage("--eps must be between 0 and 1")
    started = time.perf_counter()
    try:
        with open(args.events, encoding="utf-8") as fh:
            events = list(read_events(fh, source=args.events))
    except OSError as exc:
        raise FollowersError(str(exc)) from exc
    graph, blocks = scan_events(events, blocks=args.blocks, since=args.since, eps=args.eps)
    summary = block_summary(blocks)
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps({"edges": graph.edges, "actors": len(graph.actors), "targets": len(graph.targets),
                          "seconds": round(seconds, 3), "blocks": summary}, sort_keys=True))
        return 0
    print(f"{graph.edges} edges, {len(graph.actors)} accounts, {len(graph.targets)} targets, {seconds:.1f}s")
    for number, block in enumerate(summary, 1):
        print(f"block {number}: {block['actors']} accounts x {block['targets']} targets, {block['edges']} edges, "
              f"density {block['density']} (x{block['lift']} the graph), mean risk {block['mean_prior']}")
        print(f"  accounts: {', '.join(str(a) for a in block['actor_sample'])}")  # type: ignore[attr-defined]
    return 0
