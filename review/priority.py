"""Queue priority = score x reach: how bad it looks times how many people it touches.

Reach, by item:

* **content** (holds, flags, blocks): the author's audience as the gateway knows it — the
  followers the fake-follower detectors observed for the author (their decayed follow count, about
  the last few days; the author is looked up by name as a follow target), else 1;
* **follow cohort**: accounts x targets (every account followed every target in lockstep);
* **flagged target** (suspected purchased followers): its recent followers;
* **appeal**: not computed here — an appeal carries its original item's priority
  (``review.appeals``), so it is as urgent as what it appeals.

Stored as an integer: ``round(score x reach x 100)`` (two decimals of the product), floored at 0
and capped at ``MAX_PRIORITY``; escalation adds ``ESCALATION_BOOST`` on top (``review.queue``).
The queue and claim-next order by priority, then age.

``PrioritySink`` applies this to every item the gateway writes (moderation and the follower
detectors), in one place, and records the reach and its basis in the item's ``content.reach``
so moderators see why an item is where it is."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from moderation.sinks import NewReviewItem, ReviewSink

__all__ = ["ESCALATION_BOOST", "MAX_PRIORITY", "SCALE", "Audience", "PrioritySink", "Reach", "priority",
           "reach_of"]

SCALE = 100
MAX_PRIORITY = 999_999_999
ESCALATION_BOOST = 1_000_000_000  # above any computed priority; still inside a 32-bit INTEGER once
MAX_REACH = 1e9

Audience = Callable[[str], float | None]
"""Followers the gateway observed for an account name (None or 0: unknown)."""


@dataclass(frozen=True, slots=True)
class Reach:
    value: float
    basis: str

    def as_dict(self) -> dict[str, Any]:
        return {"value": round(self.value, 3), "basis": self.basis}


def priority(score: float | None, reach: float) -> int:
    """``round(score x reach x SCALE)``: no or negative score is 0; reach is at least 1."""
    s = score if score is not None and math.isfinite(score) and score > 0 else 0.0
    r = min(reach, MAX_REACH) if math.isfinite(reach) and reach >= 1 else 1.0
    return int(min(MAX_PRIORITY, round(s * r * SCALE)))


def _count(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _author_names(item: NewReviewItem) -> list[str]:
    names = []
    author = item.content.get("author")
    if isinstance(author, str) and author:
        names.append(author)
    if item.principal_kind == "external" and item.principal_id.count(":") >= 2:
        names.append(item.principal_id.split(":", 2)[2])  # ext:<authenticator>:<subject>
    if not item.principal_id.startswith("ip:"):
        names.append(item.principal_id)
    return list(dict.fromkeys(names))


def reach_of(item: NewReviewItem, audience: Audience | None = None) -> Reach:
    """The reach of a content or follow item (appeals carry their original's priority)."""
    content = item.content
    if item.kind == "follow":
        accounts = len(content.get("accounts") or ())
        if item.principal_kind == "cohort":
            targets = len(content.get("targets") or ())
            return Reach(float(max(1, accounts) * max(1, targets)), f"{accounts} accounts x {targets} targets")
        followers = _count((content.get("details") or {}).get("followers"))
        if followers is not None and followers >= 1:
            return Reach(followers, "recent followers of the target")
        return Reach(float(max(1, accounts)), "suspect followers of the target")
    if item.kind == "content" and audience is not None:
        for name in _author_names(item):
            try:
                found = _count(audience(name))
            except Exception:  # reach is advisory: a broken lookup must not lose the review item
                found = None
            if found is not None and found >= 1:
                return Reach(found, f"followers of {name} observed by the follow detectors")
    return Reach(1.0, "audience unknown")


class PrioritySink:
    """A ``ReviewSink`` that sets each item's priority to score x reach, then hands it on."""

    def __init__(self, inner: ReviewSink, audience: Audience | None = None) -> None:
        self.inner = inner
        self.audience = audience

    async def enqueue(self, item: NewReviewItem) -> str:
        if item.kind == "appeal":
            return await self.inner.enqueue(item)
        reach = reach_of(item, self.audience)
        return await self.inner.enqueue(replace(item, priority=priority(item.score, reach.value),
                                                content={**item.content, "reach": reach.as_dict()}))
