"""The adapter from follower review items to the moderation review queue (``review_items``).

Kept apart from the detectors: it is the only module of this package that touches another
feature package, and it imports it lazily, so ``followers`` loads (and is tested) without the
database layer. Each ``FollowReview`` becomes one ``NewReviewItem`` of kind ``follow``, action
``flag``; a cohort is ONE item whose content lists every account (for a bulk decision), with
``group_id`` = the cohort id. ``decision_id`` is the review id, so a retried write is idempotent
(the queue is unique per kind and decision id)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from followers.actions import FollowReview

if TYPE_CHECKING:
    from moderation.records import ReviewSink

__all__ = ["ModerationQueueSink", "review_item"]


def _decision_id(review_id: str) -> str:
    # The queue column is 64 characters; long target names are hashed, not truncated (two long
    # names with one prefix must not collide into one item).
    if len(review_id) <= 64:
        return review_id
    return "followers:" + hashlib.blake2b(review_id.encode(), digest_size=16).hexdigest()


def review_item(review: FollowReview, rule_id: str = "followers") -> Any:
    """The ``moderation.records.NewReviewItem`` for ``review``."""
    from moderation.records import NewReviewItem

    content: dict[str, Any] = {"type": f"followers.{review.kind}", "summary": review.summary,
                               "accounts": list(review.accounts), "targets": list(review.targets),
                               "details": {k: v for k, v in review.details}}
    symbols = [{"name": f"followers.{review.kind}", "weight": round(review.score, 3), "evidence": review.summary}]
    return NewReviewItem(
        kind="follow", action="flag", rule_id=rule_id, decision_id=_decision_id(review.review_id),
        principal_id=review.subject, principal_kind="cohort" if review.kind == "cohort" else "target",
        content=content, symbols=symbols, score=review.score,
        priority=min(1000, len(review.accounts) + (100 if review.kind == "cohort" else 50)),
        group_id=review.subject[:64] if review.kind == "cohort" else None, shadow=review.shadow,
        created_at=datetime.fromtimestamp(review.detected_at, UTC))


class ModerationQueueSink:
    """A ``FollowReviewSink`` writing to a moderation ``ReviewSink`` (e.g. ``ReviewQueue``)."""

    def __init__(self, queue: ReviewSink, rule_id: str = "followers") -> None:
        self.queue = queue
        self.rule_id = rule_id

    async def submit(self, review: FollowReview) -> str:
        return await self.queue.enqueue(review_item(review, self.rule_id))
