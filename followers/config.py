"""Typed, validated-once, immutable settings for follower detection (house style 10).

The policy layer builds these from the route's ``follow:`` block; every field has a documented
default chosen from first principles (units, p-values, "how many independent indicators"), not
fitted to the simulator. Invalid values raise ``FollowersConfigError`` naming the field."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal

from followers.errors import FollowersConfigError

__all__ = ["ActionSettings", "BurstSettings", "DetectionSettings", "FollowRoute", "LockstepSettings",
           "ProfileSettings", "RiskSettings", "RiskWeights", "parse_target"]

Mode = Literal["enforce", "shadow"]
OnRisk = Literal["deny", "challenge", "none"]


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not (value > 0 and math.isfinite(value)):
            raise FollowersConfigError(f"{type(obj).__name__}.{name}: must be a positive number, got {value!r}")


def parse_target(spec: str) -> tuple[Literal["path", "body"], str]:
    """``path:NAME`` (a path parameter) or ``body:/json/pointer`` (RFC 6901) → (where, name)."""
    where, _, name = spec.partition(":")
    if where == "path" and name.isidentifier():
        return "path", name
    if where == "body" and name.startswith("/"):
        return "body", name
    raise FollowersConfigError(f"follow.target: {spec!r} must be 'path:<parameter>' or 'body:/json/pointer'")


@dataclass(frozen=True, slots=True)
class FollowRoute:
    """Where a follow route keeps its target and whether it follows or unfollows."""

    target: str = "path:username"
    action: Literal["follow", "unfollow"] = "follow"

    def __post_init__(self) -> None:
        parse_target(self.target)
        if self.action not in ("follow", "unfollow"):
            raise FollowersConfigError(f"follow.action: {self.action!r} must be follow or unfollow")


@dataclass(frozen=True, slots=True)
class RiskWeights:
    """Weight of each account-risk feature (each feature is in [0, 1]). Defaults are in units of
    "one strong indicator" = 1.0; weaker or more often innocent indicators get less, so that no
    single innocent trait (a young account, a carrier NAT, a popular browser) reaches the
    suspicious bands on its own."""

    young: float = 1.0
    fast_first_follow: float = 0.5
    contentless: float = 1.0
    follow_rate: float = 1.0
    churn: float = 0.75
    shared_network: float = 1.0
    shared_user_agent: float = 0.75
    network_switch: float = 1.0  # new network *and* new client vs the account's own history
    challenged: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or not math.isfinite(value):
                raise FollowersConfigError(f"RiskWeights.{f.name}: must be a non-negative number, got {value!r}")


@dataclass(frozen=True, slots=True)
class RiskSettings:
    """Account-risk features. ``score_cap`` bounds a score (it is also the bound the burst test's
    Bernstein inequality uses, so a tighter cap gives a sharper test)."""

    weights: RiskWeights = field(default_factory=RiskWeights)
    young_days: float = 90.0            # age at which "young" reaches 0 (linear): panels age accounts weeks
    fast_first_follow_s: float = 600.0  # first follow this soon after signup scores 1 (0 at 1 day)
    rate_floor_per_hour: float = 8.0    # follow_rate is 0 up to this, 1 at 8x this (log scale)
    churn_min_follows: int = 5
    infra_bucket_s: float = 3600.0      # shared network / UA: distinct accounts per bucket ...
    infra_alpha: float = 1.0 / 24.0     # ... against an EWMA of that key's own past buckets
    infra_prior: float = 2.0            # expected accounts per bucket for a key never seen before
    infra_p_low: float = 1e-2           # an account count is a surprise only below this p-value
    context_min_events: int = 2         # events before an account's networks/clients are its baseline
    context_memory: int = 4             # networks and clients remembered per account
    context_partial: float = 0.25       # only one of network / client is new
    score_cap: float = 4.0
    max_accounts: int = 500_000
    max_networks: int = 200_000
    max_user_agents: int = 50_000
    members_per_bucket: int = 4096

    def __post_init__(self) -> None:
        _positive(self, "young_days", "fast_first_follow_s", "rate_floor_per_hour", "churn_min_follows",
                  "infra_bucket_s", "infra_alpha", "infra_prior", "infra_p_low", "context_min_events",
                  "context_memory", "score_cap",
                  "max_accounts", "max_networks", "max_user_agents", "members_per_bucket")
        if self.infra_p_low >= 1:
            raise FollowersConfigError("RiskSettings.infra_p_low: must be below 1")
        if not 0 <= self.context_partial <= 1:
            raise FollowersConfigError("RiskSettings.context_partial: must be in [0, 1]")
        if self.infra_alpha > 1:
            raise FollowersConfigError("RiskSettings.infra_alpha: must be at most 1")


@dataclass(frozen=True, slots=True)
class BurstSettings:
    """Per-target burst of risky followers against the target's own baseline.

    ``scales``: trailing windows tested on every follow (10 min catches an order within minutes,
    2 h and 24 h catch drip-feeds). ``fdr``: Benjamini-Hochberg false-discovery rate across
    targets. Two tests per window: the mean risk of the new followers, and the share of them that
    are *risky* (risk >= ``member_min_risk``, half a strong indicator). ``min_followers``,
    ``min_mean_excess`` and ``min_share_excess`` are the effect-size gates: a flag needs at least
    that many new followers and a mean risk above the target's usual by at least 0.5 (half a
    strong indicator each), or a risky share above its usual share by at least 0.25 (a quarter of
    the window more risky accounts than usual) — significance alone would flag any tiny shift on a
    huge account. ``member_posterior``: when a target is flagged, a follower in the window is
    labelled when the probability that it belongs to the excess (not to the target's usual
    followers), given whether it is risky and whether the detectors saw it for the first time, is
    at least this."""

    scales: tuple[float, ...] = (600.0, 7200.0, 86400.0)
    fdr: float = 0.01
    min_family: int = 1000
    min_followers: int = 10
    min_mean_excess: float = 0.5
    min_share_excess: float = 0.25
    member_min_risk: float = 0.5
    member_posterior: float = 0.99
    prior_strength: float = 50.0
    variance_floor: float = 0.05
    baseline_half_life_s: float = 3 * 86400.0
    flag_ttl_s: float = 86400.0
    bh_interval_s: float = 30.0
    max_targets: int = 200_000
    suspects_per_target: int = 2048

    def __post_init__(self) -> None:
        _positive(self, "fdr", "min_family", "min_followers", "min_mean_excess", "min_share_excess", "member_min_risk",
                  "member_posterior", "prior_strength",
                  "variance_floor", "baseline_half_life_s", "flag_ttl_s", "bh_interval_s", "max_targets",
                  "suspects_per_target")
        if not self.scales or any(not (s > 0 and math.isfinite(s)) for s in self.scales):
            raise FollowersConfigError("BurstSettings.scales: must be positive window lengths in seconds")
        if list(self.scales) != sorted(self.scales):
            raise FollowersConfigError("BurstSettings.scales: must be increasing")
        if self.fdr >= 1:
            raise FollowersConfigError("BurstSettings.fdr: must be below 1")
        if self.member_posterior >= 1 or self.min_share_excess >= 1:
            raise FollowersConfigError("BurstSettings.member_posterior and min_share_excess: must be below 1")


@dataclass(frozen=True, slots=True)
class LockstepSettings:
    """Lockstep cohorts (CopyCatch / SynchroTrap): accounts that follow the same pairs of targets
    in the same time buckets, far more often than independent accounts would.

    A pair of (target, bucket) follows shared by ``min_overlap`` or more accounts is tested
    against the overlap two independent audiences would have (expected = a*b/N, Poisson); pairs
    below ``log_p_max`` join their accounts into one cohort (union-find)."""

    bucket_s: float = 900.0
    lookback_s: float = 3 * 86400.0
    recent_per_actor: int = 8
    min_overlap: int = 10
    log_p_max: float = math.log(1e-9)
    min_cohort: int = 10
    hub_share: float = 0.005  # a target with this share of all recent follows is a hub
    signup_bucket_s: float = 3600.0  # accounts created in the same hour ...
    signup_min_age_s: float = 86400.0  # ... and at least this old when they follow (see lockstep.py)
    max_pairs: int = 300_000
    max_actors: int = 500_000
    members_per_pair: int = 4096

    def __post_init__(self) -> None:
        _positive(self, "bucket_s", "lookback_s", "recent_per_actor", "min_overlap", "min_cohort", "hub_share",
                  "signup_bucket_s", "signup_min_age_s", "max_pairs",
                  "max_actors", "members_per_pair")
        if not self.log_p_max < 0:
            raise FollowersConfigError("LockstepSettings.log_p_max: must be a log p-value below 0")


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    risk: RiskSettings = field(default_factory=RiskSettings)
    burst: BurstSettings = field(default_factory=BurstSettings)
    lockstep: LockstepSettings = field(default_factory=LockstepSettings)
    label_ttl_s: float = 30 * 86400.0

    def __post_init__(self) -> None:
        _positive(self, "label_ttl_s")


@dataclass(frozen=True, slots=True)
class ProfileSettings:
    """Optional enrichment from the backend's profile endpoint, e.g.
    ``http://127.0.0.1:8000/api/profiles/{actor}`` with ``posts_pointer: /profile/posts``."""

    url_template: str
    posts_pointer: str | None = None
    created_pointer: str | None = None
    timeout_s: float = 0.5
    cache_ttl_s: float = 3600.0
    cache_size: int = 50_000
    concurrency: int = 8

    def __post_init__(self) -> None:
        if "{actor}" not in self.url_template or not self.url_template.startswith(("http://", "https://")):
            raise FollowersConfigError("profile.url_template: must be an http(s) URL containing {actor}")
        for name in ("posts_pointer", "created_pointer"):
            value = getattr(self, name)
            if value is not None and not value.startswith("/"):
                raise FollowersConfigError(f"profile.{name}: must be a JSON pointer starting with '/'")
        _positive(self, "timeout_s", "cache_ttl_s", "cache_size", "concurrency")


@dataclass(frozen=True, slots=True)
class ActionSettings:
    """What the guard does with what was found.

    ``mode: shadow`` computes and reports (signals, review items marked shadow) but never denies,
    challenges or writes labels. ``on_label``: what happens to a follow from an account carrying
    ``label``. ``challenge_at`` / ``deny_at``: risk-score bands for follows from unlabelled
    accounts (None: off). ``account_created_claims``: principal claims holding the account's
    creation time (epoch seconds or ISO 8601), first found wins."""

    mode: Mode = "enforce"
    label: str = "fake_follower"
    on_label: OnRisk = "deny"
    challenge_at: float | None = 2.5
    deny_at: float | None = None
    challenge_level: int = 2
    review_targets: bool = True
    review_cohorts: bool = True
    account_created_claims: tuple[str, ...] = ("created_at", "account_created", "iat_account")

    def __post_init__(self) -> None:
        if self.mode not in ("enforce", "shadow"):
            raise FollowersConfigError(f"follow.mode: {self.mode!r} must be enforce or shadow")
        if self.on_label not in ("deny", "challenge", "none"):
            raise FollowersConfigError(f"follow.on_label: {self.on_label!r} must be deny, challenge or none")
        if not self.label or not self.label.replace("_", "").replace("-", "").isalnum():
            raise FollowersConfigError("follow.label: must be a short name of letters, digits, '_' or '-'")
        for name in ("challenge_at", "deny_at"):
            if getattr(self, name) is not None:
                _positive(self, name)
        if self.challenge_at is not None and self.deny_at is not None and self.deny_at < self.challenge_at:
            raise FollowersConfigError("follow.deny_at: must not be below challenge_at")
        if not 1 <= self.challenge_level <= 5:
            raise FollowersConfigError("follow.challenge_level: must be 1..5")
