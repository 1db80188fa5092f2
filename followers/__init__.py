"""Fake-follower detection: follow events, account risk, burst and lockstep detectors, batch scan.

The safe recipe: one ``FollowDetection`` per process; an event log from the state URL
(``event_log_from_url``); ``FollowActions`` over a ``LabelStore`` and a review sink
(``ModerationQueueSink(ReviewQueue(db))``); one ``FollowGuard`` per follow/unfollow route.
Below it: ``RiskTracker``, ``BurstDetector``, ``LockstepDetector``, ``fraudar`` (``followers.scan``),
the simulator (``followers.simulate``) and evaluation (``followers.evaluate``).
``tsgate followers simulate | eval | scan`` run them from the command line."""

from __future__ import annotations

from followers.actions import FollowActions, FollowReview, FollowReviewSink, LabelStore, label_key
from followers.burst import BurstDetector
from followers.config import (
    ActionSettings,
    BurstSettings,
    DetectionSettings,
    FollowRoute,
    LockstepSettings,
    ProfileSettings,
    RiskSettings,
    RiskWeights,
)
from followers.engine import FollowDetection, Observation
from followers.errors import EventFormatError, EventLogError, FollowersConfigError, FollowersError
from followers.eventlog import EventLog, EventLogConsumer, MemoryEventLog, RedisEventLog, event_log_from_url
from followers.events import FollowEvent, network_prefix, read_events, ua_hash
from followers.findings import AccountFlag, CohortFound, Finding, TargetFlag
from followers.guard import SIGNAL_NAME, FollowGuard
from followers.lockstep import LockstepDetector
from followers.profile import ProfileEnricher
from followers.review import ModerationQueueSink
from followers.risk import FEATURES, RiskScore, RiskTracker

__all__ = [
    "FEATURES",
    "SIGNAL_NAME",
    "AccountFlag",
    "ActionSettings",
    "BurstDetector",
    "BurstSettings",
    "CohortFound",
    "DetectionSettings",
    "EventFormatError",
    "EventLog",
    "EventLogConsumer",
    "EventLogError",
    "Finding",
    "FollowActions",
    "FollowDetection",
    "FollowEvent",
    "FollowGuard",
    "FollowReview",
    "FollowReviewSink",
    "FollowRoute",
    "FollowersConfigError",
    "FollowersError",
    "LabelStore",
    "LockstepDetector",
    "LockstepSettings",
    "MemoryEventLog",
    "ModerationQueueSink",
    "Observation",
    "ProfileEnricher",
    "ProfileSettings",
    "RedisEventLog",
    "RiskScore",
    "RiskSettings",
    "RiskTracker",
    "RiskWeights",
    "TargetFlag",
    "event_log_from_url",
    "label_key",
    "network_prefix",
    "read_events",
    "ua_hash",
]
