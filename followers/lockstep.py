"""Lockstep cohorts (CopyCatch, WWW 2013; SynchroTrap, CCS 2014), incrementally.

A follow is a (target, time bucket) "action". For each new follow by account A, pair it with A's
few most recent other follows (``recent_per_actor``, within ``lookback_s``): the pair key is the
two (target, bucket) actions. Independent accounts share a pair of actions about as often as
``a * b / N`` (a, b: accounts doing each action, N: active accounts); a follower-selling panel
that runs the same pool of accounts through several orders shares them by the hundreds. When a
pair's overlap reaches ``min_overlap``, its Poisson tail bound is computed; below ``log_p_max``
its accounts are joined (union-find) into a cohort, reported once at ``min_cohort`` accounts and
again (same id) each time it doubles.

The same test runs on a second kind of pair, (target, signup hour): many followers of one target
registered in the same hour. Panels register accounts in batches and age them before use; so only
accounts at least ``signup_min_age_s`` old when they follow count here — people who sign up *in
order to* follow someone (an organic viral spike's newcomers) create the opposite pattern and are
left to the account-risk features.

Pairs of two *hub* targets (a large share of all recent follows, e.g. accounts every new user is
shown at signup) are skipped: their audiences are correlated by recommendation, not by a panel,
and the independence null would be wrong for them. Everything is capped: actors and pairs are
LRU maps, members per pair are capped, the union-find stops growing at ``max_actors``."""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Callable

from followers.bounded import LRU
from followers.config import LockstepSettings
from followers.events import FollowEvent
from followers.findings import AccountFlag, CohortFound, Finding
from followers.stats import poisson_log_sf

__all__ = ["LockstepDetector"]

Action = tuple[str, int]


class _Pair:
    __slots__ = ("joined", "members")

    def __init__(self, first: str | None = None) -> None:
        self.members: list[str] = [] if first is None else [first]
        self.joined = 0  # members already joined into the cohort


class LockstepDetector:
    def __init__(self, settings: LockstepSettings | None = None, *,
                 is_hub: Callable[[str], bool] | None = None,
                 volume: Callable[[str], float] | None = None) -> None:
        self.settings = s = settings or LockstepSettings()
        self.is_hub = is_hub or (lambda _target: False)
        self.volume = volume or (lambda _target: 1.0)
        self.signup_counts: LRU[int, int] = LRU(s.max_pairs)  # signup hour -> active accounts
        self.signup_pairs: LRU[tuple[str, int], _Pair] = LRU(s.max_pairs)
        self.recent: LRU[str, deque[tuple[str, int, float]]] = LRU(s.max_actors)
        self.action_counts: LRU[Action, int] = LRU(s.max_pairs)
        # A pair with one member is stored as that member's name: most pairs never get a second,
        # and a plain string is nothing for the garbage collector to scan (an object per pair made
        # the collector a large share of the per-follow cost).
        self.pairs: LRU[tuple[Action, Action], _Pair | str] = LRU(s.max_pairs)
        self.parent: dict[str, str] = {}
        self.members: dict[str, list[str]] = {}  # root -> accounts
        self.targets: dict[str, set[str]] = {}  # root -> targets (capped)
        self.cohort_id: dict[str, str] = {}  # root -> stable id
        self.reported: dict[str, int] = {}  # cohort id -> size when last reported
        self.best_log_p: dict[str, float] = {}
        self.union_dropped = 0

    def _find(self, x: str) -> str:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def _add(self, x: str) -> bool:
        if x in self.parent:
            return True
        if len(self.parent) >= self.settings.max_actors:
            self.union_dropped += 1
            return False
        self.parent[x] = x
        self.members[x] = [x]
        return True

    def _union(self, a: str, b: str) -> str:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return ra
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra].extend(self.members.pop(rb))
        ta = self.targets.setdefault(ra, set())
        tb = self.targets.pop(rb, set())
        if len(ta) < 256:
            ta.update(list(tb)[: 256 - len(ta)])
        # The larger cohort keeps its id, so a growing cohort is one review item.
        id_a, id_b = self.cohort_id.get(ra), self.cohort_id.pop(rb, None)
        if id_a is None and id_b is not None:
            self.cohort_id[ra] = id_b
        return ra

    def observe(self, event: FollowEvent, now_active: int) -> list[Finding]:
        """``now_active``: how many accounts are active in the lookback (the N of the null)."""
        if event.action != "follow":
            return []
        s = self.settings
        bucket = int(event.ts // s.bucket_s)
        action: Action = (event.target, bucket)
        counts = self.action_counts
        counts.put(action, (counts.get(action) or 0) + 1)
        history = self.recent.get(event.actor)
        signup = -1
        if event.actor_created is not None:
            signup = int(event.actor_created // s.signup_bucket_s)
        if history is None:
            history = self.recent.get_or_create(event.actor, deque)
            if signup >= 0:
                self.signup_counts.put(signup, (self.signup_counts.get(signup) or 0) + 1)
        horizon = event.ts - s.lookback_s
        while history and history[0][2] <= horizon:
            history.popleft()
        out: list[Finding] = []
        target_hub = self.is_hub(event.target)
        for other_target, other_bucket, _ in history:
            if other_target == event.target or (target_hub and self.is_hub(other_target)):
                continue
            other: Action = (other_target, other_bucket)
            key = (other, action) if other < action else (action, other)
            entry = self.pairs.get(key)
            if entry is None:
                self.pairs.put(key, event.actor)
                continue
            pair = _Pair(entry) if isinstance(entry, str) else entry
            self.pairs.put(key, pair)  # (also marks it recently used)
            if len(pair.members) < s.members_per_pair:
                pair.members.append(event.actor)
            overlap = len(pair.members)
            if overlap >= s.min_overlap:
                expected = (counts.get(key[0]) or 1) * (counts.get(key[1]) or 1) / max(now_active, 1)
                log_p = poisson_log_sf(overlap, expected)
                if log_p <= s.log_p_max:
                    out.extend(self._join(pair, (other_target, event.target), log_p, event.ts))
        if signup >= 0 and event.ts - (event.actor_created or 0.0) >= s.signup_min_age_s and not target_hub:
            batch = self.signup_pairs.get_or_create((event.target, signup), _Pair)
            if len(batch.members) < s.members_per_pair and event.actor not in batch.members[-64:]:
                batch.members.append(event.actor)
            overlap = len(batch.members)
            if overlap >= s.min_overlap:
                expected = self.volume(event.target) * (self.signup_counts.get(signup) or 1) / max(now_active, 1)
                log_p = poisson_log_sf(overlap, expected)
                if log_p <= s.log_p_max:
                    out.extend(self._join(batch, (event.target,), log_p, event.ts))
        history.append((event.target, bucket, event.ts))
        if len(history) > s.recent_per_actor:
            history.popleft()
        return out

    def _join(self, pair: _Pair, pair_targets: tuple[str, ...], log_p: float, ts: float) -> list[Finding]:
        members = pair.members
        first = members[0]
        if not self._add(first):
            return []
        root = self._find(first)
        before = len(self.members[root])
        fresh: list[str] = []
        for member in members[max(pair.joined, 1):]:
            if member not in self.parent:
                fresh.append(member)
            if self._add(member):
                root = self._union(root, member)
        pair.joined = len(members)
        targets = self.targets.setdefault(root, set())
        if len(targets) < 256:
            targets.update(pair_targets)
        cid = self.cohort_id.get(root)
        if cid is None:
            cid = "c" + hashlib.blake2b(f"{first}|{pair_targets}".encode(), digest_size=6).hexdigest()
            self.cohort_id[root] = cid
        self.best_log_p[cid] = min(self.best_log_p.get(cid, 0.0), log_p)
        accounts = self.members[root]
        size = len(accounts)
        min_cohort = self.settings.min_cohort
        if size < min_cohort:
            return []
        out: list[Finding] = []
        if before < min_cohort:  # the cohort just became reportable: every member, not only the new ones
            flagged: list[str] = accounts
        else:
            flagged = fresh
        out.extend(AccountFlag(a, ts, f"cohort:{cid}", math.nan) for a in flagged)
        if size >= 2 * self.reported.get(cid, 0):
            self.reported[cid] = size
            out.append(CohortFound(cid, ts, tuple(sorted(accounts)), tuple(sorted(targets)), self.best_log_p[cid]))
        return out
