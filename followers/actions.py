"""Acting on findings: account labels with a TTL in the StateStore, and review items.

Rules decide, sinks act (house style 13): the engine returns ``Finding`` values; ``FollowActions``
is the one place that turns them into effects, fail-soft (a store or queue error is counted and
logged, never raised into a request).

* Labels: ``label_key(actor, label)`` → ``followers:{<actor>}:label:<label>`` holding a small
  JSON reason, with a TTL. Any guard can read it (``LabelStore.has``) — e.g. a rate limit or
  moderation guard treating ``fake_follower`` accounts more strictly.
* Review items (``FollowReview``): one per flagged target ("suspected purchased followers",
  with the share of recent followers that look fake) and **one per cohort** listing its
  accounts, written when the cohort has stopped growing for ``settle_s`` (labels are applied
  at once; the item waits so that moderators decide on the whole cohort in bulk)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from followers.findings import AccountFlag, CohortFound, Finding, TargetFlag
from gateway.core.errors import StoreError
from gateway.core.state.base import StateStore, store_key

__all__ = ["FollowActions", "FollowReview", "FollowReviewSink", "LabelStore", "label_key"]

log = logging.getLogger("tsgate.followers")
MAX_ACCOUNTS_PER_ITEM = 10_000


def label_key(actor: str, label: str = "fake_follower") -> str:
    """The StateStore key of an account label (cluster-safe: the actor is the hash tag)."""
    return store_key("followers", actor, "label", label)


class LabelStore:
    """Account labels with a TTL, on the shared StateStore."""

    def __init__(self, store: StateStore, label: str = "fake_follower") -> None:
        self.store = store
        self.label = label

    async def put(self, actor: str, ttl: float, reason: dict[str, Any]) -> None:
        await self.store.set(label_key(actor, self.label), json.dumps(reason, separators=(",", ":")).encode(), ttl)

    async def get(self, actor: str) -> dict[str, Any] | None:
        raw = await self.store.get(label_key(actor, self.label))
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return {"source": "unknown"}
        return value if isinstance(value, dict) else {"source": "unknown"}

    async def has(self, actor: str) -> bool:
        return await self.store.get(label_key(actor, self.label)) is not None

    async def clear(self, actor: str) -> bool:
        """Remove a label (a moderator cleared the account)."""
        return await self.store.delete(label_key(actor, self.label))


@dataclass(frozen=True, slots=True)
class FollowReview:
    """One review item: a flagged target or a cohort. ``review_id`` is stable per finding, so a
    retried write is idempotent in the queue."""

    kind: Literal["target", "cohort"]
    review_id: str
    subject: str  # the target, or the cohort id
    summary: str
    accounts: tuple[str, ...]
    targets: tuple[str, ...]
    score: float  # -log p of the test that found it
    detected_at: float
    shadow: bool = False
    details: tuple[tuple[str, float | int | str], ...] = ()


class FollowReviewSink(Protocol):
    """Where follow review items go. ``submit`` returns an item id once durable or raises
    ``StoreError``. ``followers.review.ModerationQueueSink`` adapts the moderation queue."""

    async def submit(self, review: FollowReview) -> str: ...


class FollowActions:
    """Apply findings: labels (unless shadow), review items (marked shadow in shadow mode)."""

    def __init__(self, labels: LabelStore | None, sink: FollowReviewSink | None, *, label_ttl_s: float,
                 shadow: bool = False, review_targets: bool = True, review_cohorts: bool = True,
                 settle_s: float = 600.0, max_pending: int = 1024) -> None:
        self.labels = labels
        self.sink = sink
        self.label_ttl_s = label_ttl_s
        self.shadow = shadow
        self.review_targets = review_targets
        self.review_cohorts = review_cohorts
        self.settle_s = settle_s
        self.max_pending = max_pending
        self._pending: dict[str, CohortFound] = {}
        self._written: set[str] = set()
        self.counters = {"labels": 0, "label_errors": 0, "reviews": 0, "review_errors": 0, "shadow_labels": 0}
        self.reviews: list[FollowReview] = []  # the last few, for the admin API and tests
        self.flagged_targets: dict[str, TargetFlag] = {}

    async def apply(self, findings: Sequence[Finding], now: float) -> None:
        for finding in findings:
            if isinstance(finding, AccountFlag):
                await self._label(finding)
            elif isinstance(finding, TargetFlag):
                self._remember_target(finding)
                if self.review_targets:
                    await self._submit(_target_review(finding, self.shadow))
            elif self.review_cohorts and finding.cohort_id not in self._written:
                self._pending[finding.cohort_id] = finding
                if len(self._pending) > self.max_pending:  # bounded: write the oldest now
                    oldest = next(iter(self._pending))
                    await self._write_cohort(self._pending.pop(oldest))
        await self.flush(now)

    async def flush(self, now: float, *, force: bool = False) -> None:
        """Write cohorts that have not grown for ``settle_s`` (all of them with ``force``)."""
        due = [cid for cid, c in self._pending.items() if force or c.ts <= now - self.settle_s]
        for cid in due:
            await self._write_cohort(self._pending.pop(cid))

    def _remember_target(self, flag: TargetFlag) -> None:
        self.flagged_targets[flag.target] = flag
        if len(self.flagged_targets) > 10_000:
            self.flagged_targets.pop(next(iter(self.flagged_targets)))

    async def _write_cohort(self, cohort: CohortFound) -> None:
        self._written.add(cohort.cohort_id)
        if len(self._written) > 100_000:
            self._written.pop()
        await self._submit(_cohort_review(cohort, self.shadow))

    async def _label(self, flag: AccountFlag) -> None:
        if self.shadow or self.labels is None:
            self.counters["shadow_labels"] += 1
            return
        reason = {"source": flag.source, "at": round(flag.ts, 3)}
        if flag.risk == flag.risk:  # not NaN
            reason["risk"] = round(flag.risk, 3)
        try:
            await self.labels.put(flag.actor, self.label_ttl_s, reason)
            self.counters["labels"] += 1
        except StoreError as exc:
            self.counters["label_errors"] += 1
            log.warning("follower label for %s not written: %s", flag.actor, exc)

    async def _submit(self, review: FollowReview) -> None:
        self.reviews.append(review)
        del self.reviews[:-100]
        if self.sink is None:
            return
        try:
            await self.sink.submit(review)
            self.counters["reviews"] += 1
        except StoreError as exc:
            self.counters["review_errors"] += 1
            log.error("follower review item %s not written: %s", review.review_id, exc)


def _target_review(flag: TargetFlag, shadow: bool) -> FollowReview:
    return FollowReview(
        kind="target", review_id=f"followers:target:{flag.target}:{int(flag.ts)}", subject=flag.target,
        summary=f"suspected purchased followers: {flag.fake_share:.0%} of {flag.followers} recent followers look "
                f"fake", accounts=(), targets=(flag.target,), score=-flag.log_p, detected_at=flag.ts, shadow=shadow,
        details=(("fake_share", round(flag.fake_share, 4)), ("followers", flag.followers),
                 ("window_s", flag.window_s), ("mean_risk", round(flag.mean_risk, 3)),
                 ("baseline_risk", round(flag.baseline_risk, 3)), ("volume_lift", round(flag.volume_lift, 2)),
                 ("evidence", flag.evidence())))


def _cohort_review(cohort: CohortFound, shadow: bool) -> FollowReview:
    return FollowReview(
        kind="cohort", review_id=f"followers:cohort:{cohort.cohort_id}", subject=cohort.cohort_id,
        summary=f"lockstep cohort of {len(cohort.accounts)} accounts across {len(cohort.targets)} targets",
        accounts=cohort.accounts[:MAX_ACCOUNTS_PER_ITEM], targets=cohort.targets, score=-cohort.log_p,
        detected_at=cohort.ts, shadow=shadow,
        details=(("accounts", len(cohort.accounts)), ("evidence", cohort.evidence())))
