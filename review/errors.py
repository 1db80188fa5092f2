"""The review package's one exception root and its leaves (HOUSE_STYLE 7): the API turns each
into problem+json with the stable ``reason`` id it carries."""

from __future__ import annotations

__all__ = ["AlreadyDecided", "DecisionNotAllowed", "ItemNotFound", "LeaseHeld", "ReviewError"]


class ReviewError(Exception):
    """Base of review-queue failures that a caller can act on."""

    status = 409
    reason = "review.error"


class ItemNotFound(ReviewError):
    status = 404
    reason = "review.not_found"


class LeaseHeld(ReviewError):
    """Another moderator holds an unexpired lease on the item."""

    status = 409
    reason = "review.lease_held"


class AlreadyDecided(ReviewError):
    """The item was resolved with a different decision (the same decision again is idempotent)."""

    status = 409
    reason = "review.already_decided"


class DecisionNotAllowed(ReviewError):
    """The decision does not apply to this item (e.g. approve on an item with no held request is fine,
    but a bulk decision on an empty group is not)."""

    status = 422
    reason = "review.decision_not_allowed"
