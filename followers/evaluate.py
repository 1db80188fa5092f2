"""Replay a follow-event stream through the detection engine and score it against labels.

The replay uses ``FollowDetection`` — the code the guard runs — on events in time order (a
stable sort, so recorded streams that are slightly out of order are fine). Scores are per
account: a labelled account flagged at any time is a true positive; an unlabelled one flagged
is a false flag. A false flag is attributed to an attack kind when the detection that flagged
it was about that kind (a burst on a target bought with that kind, or a cohort whose labelled
members are mostly of that kind); precision per kind uses those. Time to detect is per order:
from its first delivered follow to the first flag of its target or of one of its accounts.

Labels (docs/followers-events.md): ``{"accounts": {actor: kind}, "targets": {target: kind},
"orders": [{"kind", "target", "start", ...}], "viral": [{"target", "start", "end"}]}``; only
``accounts`` is required."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from followers.config import DetectionSettings
from followers.engine import FollowDetection
from followers.errors import EventFormatError
from followers.events import FollowEvent, read_events
from followers.findings import AccountFlag, CohortFound, TargetFlag

__all__ = ["Replay", "evaluate", "load_labels", "replay", "score"]


@dataclass
class Replay:
    flags: dict[str, tuple[float, str]]  # actor -> (first flag time, source)
    target_flags: dict[str, float]  # target -> first flag time
    cohorts: dict[str, CohortFound]  # id -> latest report
    followed: dict[str, list[tuple[float, str]]]  # target -> [(ts, actor)] first follows, for time to detect
    actors: set[str]
    events: int
    seconds: float


def load_labels(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EventFormatError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("accounts"), dict):
        raise EventFormatError(f"{path}: expected an object with an 'accounts' map (actor -> kind)")
    return data


def replay(events: Iterable[FollowEvent], settings: DetectionSettings | None = None,
           *, watch_targets: set[str] | None = None) -> Replay:
    ordered = sorted(events, key=lambda e: e.ts)
    engine = FollowDetection(settings)
    flags: dict[str, tuple[float, str]] = {}
    target_flags: dict[str, float] = {}
    cohorts: dict[str, CohortFound] = {}
    followed: dict[str, list[tuple[float, str]]] = defaultdict(list)
    actors: set[str] = set()
    watch = watch_targets or set()
    started = time.perf_counter()
    for event in ordered:
        actors.add(event.actor)
        if event.target in watch and event.action == "follow":
            followed[event.target].append((event.ts, event.actor))
        for finding in engine.observe(event).findings:
            if isinstance(finding, AccountFlag):
                flags.setdefault(finding.actor, (finding.ts, finding.source))
            elif isinstance(finding, TargetFlag):
                target_flags.setdefault(finding.target, finding.ts)
            else:
                cohorts[finding.cohort_id] = finding
    return Replay(flags, target_flags, cohorts, dict(followed), actors, len(ordered), time.perf_counter() - started)


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def score(result: Replay, labels: dict[str, Any]) -> dict[str, Any]:
    accounts: dict[str, str] = {a: str(k) for a, k in labels["accounts"].items() if a in result.actors}
    targets: dict[str, str] = {str(t): str(k) for t, k in labels.get("targets", {}).items()}
    honest = result.actors - set(accounts)
    cohort_kind: dict[str, str] = {}
    for cid, cohort in result.cohorts.items():
        kinds = Counter(accounts[a] for a in cohort.accounts if a in accounts)
        if kinds:
            cohort_kind[cid] = kinds.most_common(1)[0][0]

    def attributed(source: str) -> str | None:
        what, _, ident = source.partition(":")
        return targets.get(ident) if what == "burst" else cohort_kind.get(ident)

    kind_names = sorted(set(accounts.values()))
    tp = Counter(accounts[a] for a in result.flags if a in accounts)
    fp_by_kind: Counter[str] = Counter()
    false_flags = [a for a in result.flags if a in honest]
    for actor in false_flags:
        kind = attributed(result.flags[actor][1])
        if kind is not None:
            fp_by_kind[kind] += 1
    positives = Counter(accounts.values())

    # Time to detect, per order: first delivered follow -> first flag of the target or its accounts.
    ttd: dict[str, list[float]] = defaultdict(list)
    undetected: Counter[str] = Counter()
    orders = labels.get("orders") or [{"kind": k, "target": t} for t, k in targets.items()]
    for order in orders:
        target, kind = str(order["target"]), str(order["kind"])
        # The order's own follows: from its start when the labels give one (a hijacked account may
        # have followed the target organically days before it was taken over).
        start = float(order.get("start", float("-inf")))
        delivered = [(ts, a) for ts, a in result.followed.get(target, []) if accounts.get(a) == kind and ts >= start]
        if not delivered:
            continue
        first = min(ts for ts, _ in delivered)
        candidates = [result.flags[a][0] for _, a in delivered if a in result.flags]
        if target in result.target_flags:
            candidates.append(result.target_flags[target])
        candidates = [c for c in candidates if c >= first]
        if candidates:
            ttd[kind].append(min(candidates) - first)
        else:
            undetected[kind] += 1

    by_kind: dict[str, dict[str, Any]] = {}
    for kind in kind_names:
        row: dict[str, Any] = _prf(tp[kind], fp_by_kind[kind], positives[kind] - tp[kind])
        row["median_time_to_detect_s"] = round(statistics.median(ttd[kind]), 1) if ttd[kind] else None
        row["accounts"] = positives[kind]
        row["orders_detected"] = len(ttd[kind])
        row["orders_missed"] = undetected[kind]
        by_kind[kind] = row
    total_tp = sum(tp.values())
    overall: dict[str, Any] = _prf(total_tp, len(false_flags), len(accounts) - total_tp)
    all_ttd = [x for values in ttd.values() for x in values]
    overall["median_time_to_detect_s"] = round(statistics.median(all_ttd), 1) if all_ttd else None

    viral = labels.get("viral", [])
    viral_targets = {str(v["target"]) for v in viral}
    viral_false = sum(1 for a in false_flags if result.flags[a][1].partition(":")[2] in viral_targets)
    return {
        "by_kind": by_kind,
        "overall": overall,
        "false_flags_per_100k_honest": round(len(false_flags) / max(len(honest), 1) * 1e5, 2),
        "false_flags": len(false_flags),
        "honest_accounts": len(honest),
        "viral": {"spikes": len(viral), "targets_flagged": len(viral_targets & set(result.target_flags)),
                  "false_flags": viral_false,
                  "false_flags_per_100k_honest": round(viral_false / max(len(honest), 1) * 1e5, 2)},
        "targets_flagged": {"bought": len(set(targets) & set(result.target_flags)), "bought_total": len(targets),
                            "other": len(set(result.target_flags) - set(targets))},
        "cohorts": len(result.cohorts),
        "events": result.events,
        "events_per_s": round(result.events / result.seconds) if result.seconds > 0 else None,
    }


def evaluate(events_path: str | Path, labels_path: str | Path,
             settings: DetectionSettings | None = None) -> dict[str, Any]:
    labels = load_labels(labels_path)
    watch = {str(o["target"]) for o in labels.get("orders", [])} | {str(t) for t in labels.get("targets", {})}
    with open(events_path, encoding="utf-8") as fh:
        events = list(read_events(fh, source=str(events_path)))
    return score(replay(events, settings, watch_targets=watch), labels)
