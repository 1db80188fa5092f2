"""A follow-graph simulator with injected follower-selling orders and honest negative controls.

No real fake-follower data set exists in any package registry (../shared/DATA.md), so this is
what ``tsgate followers eval`` and the tests run on. It is deliberately *not* shaped to make the
detectors look good: honest traffic includes young accounts, new signups that follow a burst of
popular accounts within minutes, carrier-grade NAT networks shared by thousands, roaming between
networks, popular browsers shared by most users, lurkers without posts, and organic viral spikes
of the same size as the orders (with 10 % brand-new signups who joined to follow).

Organic graph: power-law (Zipf) popularity over all honest accounts, per-account activity
(log-normal), diurnal timing in the account's own time zone, account ages log-uniform over
years, ~5 % of follows later undone. Order kinds (labels.json ``kind``):

* ``burst`` — a fake pool delivers the order within 10-60 minutes over rotating residential
  proxies and common browsers;
* ``drip`` — the same, spread over 24-72 hours, with ~10 % of the follows later dropped;
* ``camouflage`` — fakes also follow 1-10 popular accounts each around the bought follow;
* ``hijacked`` — taken-over old accounts with organic history and posts, driven through the
  panel's proxies;
* ``shared_infra`` — fakes behind a few datacenter /24s with one client User-Agent.

Fake pools are reused across orders of a kind (as panels do); 20 % of fakes are "aged" accounts
(2-13 months old). Output: ``events.jsonl`` and ``labels.json`` (docs/followers-events.md)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from followers.events import FollowEvent, event_to_json, network_prefix, ua_hash

__all__ = ["ATTACK_KINDS", "SimConfig", "Simulation", "simulate", "write_simulation"]

ATTACK_KINDS: tuple[str, ...] = ("burst", "drip", "camouflage", "hijacked", "shared_infra")
DAY = 86400.0
EPOCH = 1_735_689_600.0  # 2025-01-01T00:00:00Z: the simulation's start

_BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{w} "
    "Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{w} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel {w}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
]


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 7
    accounts: int = 20_000
    days: float = 3.0
    orders_per_kind: int = 3
    order_min: int = 200
    order_max: int = 1000
    viral_spikes: int | None = None  # default: as many as orders
    follows_per_day: float = 2.0
    signup_share: float = 0.05
    with_posts: bool = False  # add the optional actor_posts field (a profile lookup would know it)
    kinds: tuple[str, ...] = ATTACK_KINDS


@dataclass
class Simulation:
    events: list[tuple[FollowEvent, str, str]] = field(default_factory=list)  # event, ip, user agent
    labels: dict[str, Any] = field(default_factory=dict)


class _Gen:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.uas = [b.format(v=100 + i, w=1 + i % 9) for i, b in enumerate(_BROWSERS * 6)]
        ua_rank = np.arange(1, len(self.uas) + 1, dtype=float)
        self.ua_p = ua_rank ** -1.2 / np.sum(ua_rank ** -1.2)
        self.cgnat = [self._ip() for _ in range(40)]
        self.out: list[tuple[float, str, str, str, str, str, float | None, int | None]] = []

    def _ip(self) -> str:
        a, b, c, d = self.rng.integers([11, 0, 0, 1], [223, 256, 256, 255])
        return f"{a}.{b}.{c}.{d}"

    def _emit(self, ts: float, actor: str, target: str, action: str, ip: str, ua: str, created: float | None,
              posts: int | None) -> None:
        self.out.append((ts, actor, target, action, ip, ua, created, posts))


def simulate(cfg: SimConfig) -> Simulation:
    """Generate one run. Deterministic for a given config (seed included)."""
    g = _Gen(cfg)
    rng = g.rng
    n = cfg.accounts
    start, end = EPOCH, EPOCH + cfg.days * DAY
    names = [f"u{i:06d}" for i in range(n)]

    # -- honest population ---------------------------------------------------------------------
    signups = rng.random(n) < cfg.signup_share
    young = (rng.random(n) < 0.10) & ~signups
    age_days = np.exp(rng.uniform(math.log(30), math.log(8 * 365), n))
    created = start - age_days * DAY
    created[young] = start - rng.uniform(0.5, 30, int(young.sum())) * DAY
    created[signups] = rng.uniform(start, end - 3600, int(signups.sum()))
    posts = np.floor(rng.lognormal(2.5, 1.5, n)).astype(int)
    posts[rng.random(n) < 0.15] = 0  # lurkers
    posts[young | signups] = np.where(rng.random(int((young | signups).sum())) < 0.5, 0,
                                      posts[young | signups] // 10)
    rate = rng.lognormal(math.log(cfg.follows_per_day) - 0.5, 1.0, n)
    phase = rng.random(n)
    mobile = rng.random(n) < 0.25
    home = [g.cgnat[int(rng.integers(len(g.cgnat)))] if mobile[i] else g._ip() for i in range(n)]
    roams = rng.random(n) < 0.2
    user_ua = rng.choice(len(g.uas), n, p=g.ua_p)
    popularity = rng.permutation(n)  # popularity rank of each account
    weights = (popularity + 1.0) ** -1.1
    weights /= weights.sum()
    top = np.argsort(popularity)[:200]

    def honest_ip(i: int) -> str:
        if roams[i] and rng.random() < 0.3:
            return g.cgnat[int(rng.integers(len(g.cgnat)))]
        return home[i]

    def honest_follow(i: int, ts: float, target: int) -> None:
        if target == i:
            return
        p = int(posts[i]) if cfg.with_posts else None
        g._emit(ts, names[i], names[target], "follow", honest_ip(i), g.uas[user_ua[i]], float(created[i]), p)
        if rng.random() < 0.05:
            undo = ts + rng.exponential(2 * DAY)
            if undo < end:
                g._emit(undo, names[i], names[target], "unfollow", honest_ip(i), g.uas[user_ua[i]], float(created[i]),
                        p)

    counts = rng.poisson(rate * cfg.days * 1.7)  # thinned by the diurnal acceptance below (mean 1/1.7)
    all_targets = rng.choice(n, int(counts.sum()), p=weights)
    cursor = 0
    for i in range(n):
        k = int(counts[i])
        if not k:
            continue
        lo = max(start, float(created[i]))
        times = rng.uniform(lo, end, k)
        keep = rng.random(k) * 1.7 < 1 + 0.7 * np.sin(2 * math.pi * (times / DAY + phase[i]))
        for ts, target in zip(times[keep], all_targets[cursor:cursor + k][keep], strict=True):
            honest_follow(i, float(ts), int(target))
        cursor += k
    for i in map(int, np.flatnonzero(signups)):  # onboarding: a handful of popular accounts within minutes
        for _ in range(int(rng.integers(3, 12))):
            honest_follow(i, float(created[i] + rng.uniform(30, 1200)), int(top[int(rng.integers(0, 50))]))

    # -- orders --------------------------------------------------------------------------------
    labels: dict[str, Any] = {"format": 1, "seed": cfg.seed, "start": start, "end": end, "accounts": {},
                              "targets": {}, "orders": [], "viral": []}
    mid = np.argsort(popularity)[200: max(400, n // 2)]
    used_targets: set[int] = set()

    def pick_target() -> int:
        while True:
            t = int(mid[int(rng.integers(len(mid)))])
            if t not in used_targets:
                used_targets.add(t)
                return t

    sizes: list[int] = []
    fake_seq = 0
    for kind in cfg.kinds:
        pool_size = int(cfg.order_max * 1.5)
        if kind == "hijacked":
            old = np.flatnonzero(~young & ~signups & (age_days > 180))
            pool = [int(x) for x in rng.choice(old, min(pool_size, len(old)), replace=False)]
            pool_names = [names[i] for i in pool]
            pool_created = [float(created[i]) for i in pool]
            pool_posts = [int(posts[i]) for i in pool]
        else:
            pool_names = [f"f{fake_seq + j:06d}" for j in range(pool_size)]
            fake_seq += pool_size
            aged = rng.random(pool_size) < 0.2
            batch_days = rng.choice(rng.uniform(1, 45, 6), pool_size)  # created in a few batches
            pool_created = list(start - np.where(aged, rng.uniform(60, 400, pool_size), batch_days) * DAY
                                - rng.uniform(0, 3600, pool_size))
            pool_posts = list(np.where(rng.random(pool_size) < 0.8, 0, rng.integers(1, 5, pool_size)))
        panel_nets = [g._ip() for _ in range(int(rng.integers(3, 9)))]
        panel_ua = f"okhttp/3.{int(rng.integers(9, 15))}.{int(rng.integers(0, 9))}"
        for _ in range(cfg.orders_per_kind):
            size = round(float(math.exp(rng.uniform(math.log(cfg.order_min), math.log(cfg.order_max)))))
            size = min(size, len(pool_names))
            sizes.append(size)
            target = pick_target()
            duration = (rng.uniform(24, 72) * 3600 if kind == "drip" else
                        rng.uniform(1, 6) * 3600 if kind == "camouflage" else rng.uniform(600, 3600))
            t0 = float(rng.uniform(start + DAY, max(start + DAY + 1, end - duration)))
            members = rng.choice(len(pool_names), size, replace=False)
            labels["orders"].append({"kind": kind, "target": names[target], "start": t0, "end": t0 + duration,
                                     "size": size})
            labels["targets"][names[target]] = kind
            for j in members:
                actor = pool_names[int(j)]
                labels["accounts"].setdefault(actor, kind)
                ts = t0 + float(rng.uniform(0, duration))
                if kind == "shared_infra":
                    ip = panel_nets[int(rng.integers(len(panel_nets)))].rsplit(".", 1)[0] + f".{rng.integers(1, 255)}"
                    ua = panel_ua
                elif kind == "hijacked":
                    ip = panel_nets[int(rng.integers(len(panel_nets)))].rsplit(".", 1)[0] + f".{rng.integers(1, 255)}"
                    ua = g.uas[int(rng.choice(len(g.uas), p=g.ua_p))]
                else:  # rotating residential proxies, common browsers
                    ip = g._ip()
                    ua = g.uas[int(rng.choice(len(g.uas), p=g.ua_p))]
                p = int(pool_posts[int(j)]) if cfg.with_posts else None
                c = float(pool_created[int(j)])
                g._emit(ts, actor, names[target], "follow", ip, ua, c, p)
                if kind == "camouflage":
                    for _ in range(int(rng.integers(1, 11))):
                        hub = int(top[int(rng.integers(0, 200))])
                        g._emit(ts + float(rng.normal(0, 1800)), actor, names[hub], "follow", ip, ua, c, p)
                if kind == "drip" and rng.random() < 0.1:
                    undo = ts + float(rng.uniform(3600, 2 * DAY))
                    if undo < end:
                        g._emit(undo, actor, names[target], "unfollow", ip, ua, c, p)

    # -- negative controls: organic viral spikes of the same sizes -------------------------------
    spikes = cfg.viral_spikes if cfg.viral_spikes is not None else len(sizes)
    activity = rate / rate.sum()
    for k in range(spikes):
        size = sizes[k % len(sizes)] if sizes else 500
        target = pick_target()
        duration = float(rng.uniform(600, 3 * 3600))
        t0 = float(rng.uniform(start + DAY, max(start + DAY + 1, end - duration)))
        labels["viral"].append({"target": names[target], "start": t0, "end": t0 + duration, "size": size})
        fans = rng.choice(n, size, replace=False, p=activity)
        for i in fans:
            ts = t0 + duration * float(rng.beta(1.2, 3.0))  # a fast rise and a long tail
            if signups[i] and created[i] > ts:
                continue
            honest_follow(int(i), ts, target)
        newcomers = [len(names) + j for j in range(size // 10)]  # joined to follow the viral account
        for idx in newcomers:
            ts = t0 + duration * float(rng.beta(1.2, 3.0))
            name = f"n{k:03d}{idx:06d}"
            ip = g.cgnat[int(rng.integers(len(g.cgnat)))] if rng.random() < 0.3 else g._ip()
            ua = g.uas[int(rng.choice(len(g.uas), p=g.ua_p))]
            joined = ts - float(rng.uniform(60, 900))
            g._emit(ts, name, names[target], "follow", ip, ua, joined, 0 if cfg.with_posts else None)

    g.out.sort(key=lambda row: row[0])
    sim = Simulation(labels=labels)
    for ts, actor, target, action, ip, ua, born, posts_known in g.out:
        if ts < start or ts >= end:
            continue
        event = FollowEvent(ts=ts, actor=actor, target=target, action="unfollow" if action == "unfollow" else "follow",
                            prefix=network_prefix(ip), ua=ua_hash(ua), actor_created=born,
                            actor_posts=posts_known)
        sim.events.append((event, ip, ua))
    return sim


def write_simulation(sim: Simulation, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``events.jsonl`` and ``labels.json`` into ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events_path, labels_path = out / "events.jsonl", out / "labels.json"
    with open(events_path, "w", encoding="utf-8") as fh:
        for event, ip, ua in sim.events:
            fh.write(event_to_json(event, ip=ip, user_agent=ua))
            fh.write("\n")
    labels_path.write_text(json.dumps(sim.labels, indent=1, sort_keys=True), encoding="utf-8")
    return events_path, labels_path
