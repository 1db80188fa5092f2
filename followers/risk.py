"""Account risk from what the gateway itself observes: an explainable weighted sum of features.

Features (each in [0, 1], weights in ``RiskWeights``):

* ``young`` — account age, 1 at signup falling linearly to 0 at ``young_days``;
* ``fast_first_follow`` — the first follow we saw came within ``fast_first_follow_s`` of signup;
* ``contentless`` — the account has no posts (only when known: an event field or the profile
  enrichment; unknown is never read as zero);
* ``follow_rate`` — follows in the trailing hour, 0 up to ``rate_floor_per_hour``, 1 at 8x it;
* ``churn`` — unfollows per follow (follow→unfollow cycling to farm follow-backs);
* ``shared_network`` / ``shared_user_agent`` — how far the number of distinct accounts on this
  /24-/48 network (or with this User-Agent hash) in the trailing hour exceeds *that key's own*
  learned baseline (2x → 0, 8x → 1, and the excess must be significant, Poisson p <= 1e-2): a
  carrier NAT or the most common browser is not suspicious, a fresh proxy subnet is;
* ``network_switch`` — a sudden change against the account's *own* baseline: this follow comes
  from a network and a client (User-Agent) that the account, which has history here
  (``context_min_events``), never used before — 1 when both are new (a new device on a new
  network: the takeover pattern of hijacked accounts), ``context_partial`` when only one is (travel,
  a browser update). Per event, never sticky: an honest roamer who once used a carrier NAT is not
  marked for the rest of its life;
* ``challenged`` — challenges the account has been shown (3 → 1).

The score is capped at ``score_cap`` and always comes with its named reasons."""

from __future__ import annotations

import math
from dataclasses import dataclass

from followers.bounded import LRU, SlidingCount
from followers.config import RiskSettings
from followers.events import FollowEvent
from followers.stats import poisson_log_sf

__all__ = ["FEATURES", "AccountRisk", "RiskScore", "RiskTracker"]

FEATURES: tuple[str, ...] = ("young", "fast_first_follow", "contentless", "follow_rate", "churn", "shared_network",
                             "shared_user_agent", "network_switch", "challenged")
_DAY = 86400.0
_LOG8 = math.log(8.0)


@dataclass(frozen=True, slots=True)
class RiskScore:
    """A score and the features behind it (same order as ``FEATURES``)."""

    score: float
    features: tuple[float, ...]
    weights: tuple[float, ...]
    first_seen: bool = False  # the first event seen from this account (no history here yet)

    def reasons(self, minimum: float = 0.05) -> list[tuple[str, float]]:
        """Named contributions, largest first (what a moderator and the decision log see)."""
        out = [(name, round(f * w, 3)) for name, f, w in zip(FEATURES, self.features, self.weights, strict=True)
               if f * w >= minimum]
        return sorted(out, key=lambda item: -item[1])

    def evidence(self) -> str:
        return f"risk={self.score:.2f} " + ",".join(f"{name}:{value:g}" for name, value in self.reasons())


class AccountRisk:
    """What we remember about one account (bounded: the tracker is an LRU)."""

    __slots__ = ("agents", "challenges", "created", "events", "first_follow", "follows", "last", "networks", "posts",
                 "rate_bucket", "rate_cur", "rate_prev", "unfollows")

    def __init__(self) -> None:
        self.created: float | None = None
        self.first_follow: float | None = None
        self.follows = 0
        self.unfollows = 0
        self.rate_bucket = -1
        self.rate_cur = 0
        self.rate_prev = 0
        self.events = 0
        self.networks: tuple[str, ...] = ()  # the few networks and clients this account used (newest last)
        self.agents: tuple[str, ...] = ()
        self.posts: int | None = None
        self.challenges = 0
        self.last: RiskScore | None = None


class RiskTracker:
    """Incremental account risk: ``observe`` updates the account and returns its score, O(1)."""

    def __init__(self, settings: RiskSettings | None = None) -> None:
        self.settings = s = settings or RiskSettings()
        self.accounts: LRU[str, AccountRisk] = LRU(s.max_accounts)
        self.networks: LRU[str, SlidingCount] = LRU(s.max_networks)
        self.user_agents: LRU[str, SlidingCount] = LRU(s.max_user_agents)
        w = s.weights
        self._weights = (w.young, w.fast_first_follow, w.contentless, w.follow_rate, w.churn, w.shared_network,
                         w.shared_user_agent, w.network_switch, w.challenged)
        self._ln_low = -math.log(s.infra_p_low)
        self._started: float | None = None

    def account(self, actor: str) -> AccountRisk | None:
        return self.accounts.get(actor)

    def last_score(self, actor: str) -> RiskScore | None:
        state = self.accounts.get(actor)
        return None if state is None else state.last

    def note_profile(self, actor: str, *, posts: int | None, created: float | None) -> None:
        """Facts from the backend's profile endpoint (see ``followers.profile``)."""
        state = self.accounts.get_or_create(actor, AccountRisk)
        if posts is not None:
            state.posts = posts
        if created is not None and state.created is None:
            state.created = created

    def note_challenge(self, actor: str) -> None:
        self.accounts.get_or_create(actor, AccountRisk).challenges += 1

    def _surprise(self, counter: SlidingCount, fraction: float) -> float:
        """0..1: how far above its own baseline a network's (or UA's) account count is. Both a
        large lift (2x → 0, 8x → 1, log scale) and a small Poisson tail (<= ``infra_p_low``) are
        required: on a busy key any small wobble is "significant", and on a quiet key a lift of
        3 accounts over 1 is not evidence."""
        s = self.settings
        expected = max(counter.baseline, s.infra_prior) if counter.buckets_seen else s.infra_prior
        observed = counter.trailing(fraction)
        if observed < 2.0 * expected or -poisson_log_sf(observed, expected) < self._ln_low:
            return 0.0
        return min(1.0, (math.log2(observed / expected) - 1.0) / 2.0)

    def _context_change(self, state: AccountRisk, prefix: str, ua: str) -> float:
        """1.0 new network and new client, ``context_partial`` one of them, 0 otherwise or when the
        account has too little history to have a baseline; remembers the context either way."""
        s = self.settings
        known = state.events >= s.context_min_events
        new_net = prefix != "?" and prefix not in state.networks
        new_ua = bool(ua) and ua not in state.agents
        if new_net:
            state.networks = (*state.networks, prefix)[-s.context_memory:]
        if new_ua:
            state.agents = (*state.agents, ua)[-s.context_memory:]
        if not known or not (state.networks and state.agents):
            return 0.0
        if new_net and new_ua:
            return 1.0
        return s.context_partial if new_net or new_ua else 0.0

    def observe(self, event: FollowEvent) -> RiskScore:
        s = self.settings
        state = self.accounts.get_or_create(event.actor, AccountRisk)
        ts = event.ts
        if event.actor_created is not None:
            state.created = event.actor_created
        if event.actor_posts is not None:
            state.posts = event.actor_posts
        if event.challenges > state.challenges:
            state.challenges = event.challenges
        if event.action == "unfollow":
            state.unfollows += 1
        else:
            state.follows += 1
            if state.first_follow is None:
                state.first_follow = ts
            hour = int(ts // 3600.0)
            if hour != state.rate_bucket:
                state.rate_prev = state.rate_cur if hour == state.rate_bucket + 1 else 0
                state.rate_cur = 0
                state.rate_bucket = hour
            state.rate_cur += 1
        first_seen = state.events == 0
        switch = self._context_change(state, event.prefix, event.ua)
        state.events += 1

        bucket_s = s.infra_bucket_s
        bucket = int(ts // bucket_s)
        fraction = (ts - bucket * bucket_s) / bucket_s
        if self._started is None:
            self._started = ts
        # Bounded-influence baselines (SlidingCount), except while the tracker itself is cold: in
        # its first two buckets every key's level is unknown, and a busy carrier NAT or the most
        # common browser must be able to teach its own level at once.
        floor = s.infra_prior if ts - self._started >= 2 * bucket_s else 0.0
        shared_network = 0.0
        if event.prefix != "?":
            net = self.networks.get_or_create(event.prefix, lambda: SlidingCount(bucket))
            net.add(event.actor, bucket, s.infra_alpha, s.members_per_bucket, floor)
            shared_network = self._surprise(net, fraction)
        shared_ua = 0.0
        if event.ua:
            agent = self.user_agents.get_or_create(event.ua, lambda: SlidingCount(bucket))
            agent.add(event.actor, bucket, s.infra_alpha, s.members_per_bucket, floor)
            shared_ua = self._surprise(agent, fraction)

        young = fast = 0.0
        if state.created is not None:
            age = ts - state.created
            young = min(1.0, max(0.0, 1.0 - age / (s.young_days * _DAY)))
            if state.first_follow is not None:
                lag = state.first_follow - state.created
                if lag <= s.fast_first_follow_s:
                    fast = 1.0
                elif lag < _DAY:
                    fast = 1.0 - (lag - s.fast_first_follow_s) / (_DAY - s.fast_first_follow_s)
        contentless = 1.0 if state.posts == 0 else 0.0
        hour_fraction = (ts % 3600.0) / 3600.0
        rate = state.rate_cur + state.rate_prev * (1.0 - hour_fraction)
        follow_rate = 0.0
        if rate > s.rate_floor_per_hour:
            follow_rate = min(1.0, math.log(rate / s.rate_floor_per_hour) / _LOG8)
        churn = 0.0
        if state.follows >= s.churn_min_follows:
            churn = min(1.0, max(0.0, (state.unfollows / state.follows - 0.25) / 0.5))
        challenged = min(1.0, state.challenges / 3.0)

        features = (young, fast, contentless, follow_rate, churn, shared_network, shared_ua, switch, challenged)
        w = self._weights
        total = (young * w[0] + fast * w[1] + contentless * w[2] + follow_rate * w[3] + churn * w[4]
                 + shared_network * w[5] + shared_ua * w[6] + switch * w[7] + challenged * w[8])
        score = RiskScore(min(total, s.score_cap), features, w, first_seen)
        state.last = score
        return score
