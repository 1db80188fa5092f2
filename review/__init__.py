"""The review queue and moderator console: queue service (leases, decisions, audit, stats),
decision effects (forward held requests, bans, signed webhooks), appeals, and the admin-listener
API and web console."""

from __future__ import annotations

from review.errors import AlreadyDecided, DecisionNotAllowed, ItemNotFound, LeaseHeld, ReviewError
from review.queue import Decided, DecisionName, ItemFilter, ReviewService

__all__ = ["AlreadyDecided", "Decided", "DecisionName", "DecisionNotAllowed", "ItemFilter", "ItemNotFound",
           "LeaseHeld", "ReviewError", "ReviewService"]
