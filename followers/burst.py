"""Per-target bursts of risky followers, against each target's own baseline.

For every follow of target T and every trailing window W in ``scales``:

* ``n`` new followers, with risk sum ``S`` (sliding two-bucket counters, O(1));
* the null hypothesis: they are drawn like T's usual followers — mean ``mu0`` and variance
  ``var0`` of follower risk, learned from T's own past (folded in only from closed windows, and
  frozen while T is flagged, so an attack cannot teach the baseline) and shrunk towards the
  global follower population with ``prior_strength`` pseudo-followers;
* the test: Bernstein's inequality bounds P(S - n*mu0 >= excess) for any bounded risk
  distribution (risk is capped), Bonferroni over the windows, Benjamini-Hochberg across targets
  at false-discovery rate ``fdr`` (the cutoff is recomputed every ``bh_interval_s`` of stream
  time over the latest p-value of each target; the Bonferroni cutoff ``fdr/m`` always applies);
* the effect-size gate: at least ``min_followers`` and a mean excess of ``min_mean_excess``.

Conditioning on the window's followers is what keeps an organic viral spike (many followers,
drawn like the usual ones) from being a burst, while an order of 300 fresh accounts is one
within a minute or two. Volume against T's EWMA rate is reported as evidence, not tested.

When T is flagged its followers in the window at or above the member threshold are labelled,
and so is each such later follower while the flag lasts (``flag_ttl_s``)."""

from __future__ import annotations

import math
from collections import deque

from followers.bounded import LRU
from followers.config import BurstSettings
from followers.events import FollowEvent
from followers.findings import AccountFlag, Finding, TargetFlag
from followers.membership import member_class, member_classes
from followers.stats import bernstein_log_sf, bh_cutoff, binomial_log_sf, poisson_log_sf

__all__ = ["BurstDetector", "TargetState", "Window"]

_LOG_SF_FLOOR = -1e6
_LOG_SURGE_P = math.log(0.01)


class Window:
    """One scale's counters of one target: the sliding window (current and previous bucket) and
    the baseline folded from its closed windows."""

    __slots__ = ("base_f", "base_k", "base_n", "base_s", "base_ss", "base_t", "bucket", "cur_f", "cur_k", "cur_n",
                 "cur_s", "cur_ss", "prev_f", "prev_k", "prev_n", "prev_s")

    def __init__(self) -> None:
        self.bucket = -1
        # The sliding window: followers, risk sum (and the current bucket's risk^2 sum), risky and
        # first-seen followers, in the current and the previous bucket.
        self.cur_n = self.cur_s = self.cur_ss = self.cur_k = self.cur_f = 0.0
        self.prev_n = self.prev_s = self.prev_k = self.prev_f = 0.0
        # Closed-window sums (decayed): followers, risk, risk^2, risky, first seen, and the seconds
        # of the target's history they cover.
        self.base_n = self.base_s = self.base_ss = self.base_k = self.base_f = self.base_t = 0.0


class TargetState:
    """Counters of one target (bounded by the detector's LRU). Each scale has its own ``Window``:
    each window length has its own baseline, folded from that scale's closed windows — the
    10-minute test learns a new target in minutes, the 24-hour test compares with whole days, and
    neither is tested before it has history (except the smallest, which falls back to the global
    prior so a brand-new target can still be flagged). A few objects per target, not a list per
    counter: the garbage collector scans every container, and targets number in the hundreds of
    thousands."""

    __slots__ = ("flag_rate", "flag_scale", "flag_until", "flagged", "member_classes", "reported", "since", "suspects",
                 "vol", "vol_ts", "w")

    def __init__(self, scales: int) -> None:
        self.w = [Window() for _ in range(scales)]
        self.vol = 0.0
        self.vol_ts = 0.0
        self.since = 0.0  # first follow seen
        self.flag_until = 0.0
        self.flagged: TargetFlag | None = None
        self.flag_scale = 0
        self.flag_rate = 0.0  # the usual follower rate (per second) when the flag was raised, frozen
        self.member_classes = 0  # member_class bits: follower classes labelled under this flag
        self.reported = False  # the flag was reported (some of its followers were labelled)
        self.suspects: deque[tuple[float, str, float, bool]] = deque()  # (ts, actor, risk, first seen)


class BurstDetector:
    def __init__(self, settings: BurstSettings | None = None, *, score_cap: float = 4.0) -> None:
        self.settings = s = settings or BurstSettings()
        self.score_cap = score_cap
        self.targets: LRU[str, TargetState] = LRU(s.max_targets)
        self._scales = s.scales
        self._log_tests = math.log(2 * len(s.scales))
        self._tau = s.baseline_half_life_s / math.log(2)
        # Global follower population (decayed): the prior every target is shrunk towards.
        self.g_n = 0.0
        self.g_s = 0.0
        self.g_ss = 0.0
        self.g_k = 0.0
        self.g_f = 0.0
        self._g_ts: float | None = None
        self.g_vol = 0.0
        self._candidates: dict[str, tuple[float, float]] = {}  # target -> (log p, ts) with p <= fdr
        self._cutoff = -math.inf
        self._next_bh = -math.inf
        self.suspects_total = 0
        self.suspects_cap = s.suspects_per_target * 256
        self.suspects_dropped = 0

    # -- baselines -----------------------------------------------------------------------------

    def _decay_global(self, ts: float) -> None:
        if self._g_ts is None:
            self._g_ts = ts
            return
        dt = ts - self._g_ts
        if dt > 0:
            k = math.exp(-dt / self._tau)
            self.g_n *= k
            self.g_s *= k
            self.g_ss *= k
            self.g_k *= k
            self.g_f *= k
            self.g_vol *= k
            self._g_ts = ts

    def null(self, state: TargetState, i: int) -> tuple[float, float]:
        """(mean, variance) of follower risk under the target's own (shrunk) baseline at scale ``i``."""
        s = self.settings
        a = s.prior_strength
        if self.g_n > 0:
            g_mu = self.g_s / self.g_n
            g_var = max(self.g_ss / self.g_n - g_mu * g_mu, 0.0)
        else:
            g_mu, g_var = 0.0, 0.0
        w = state.w[i]
        n = w.base_n + a
        mu = (w.base_s + a * g_mu) / n
        second = (w.base_ss + a * (g_var + g_mu * g_mu)) / n
        return mu, max(second - mu * mu, s.variance_floor)

    def share(self, target: str) -> float:
        """The target's share of all follows in its *closed* daily windows (frozen while it is
        flagged): a hub is popular by its history, an order does not make its own target a hub."""
        state = self.targets.get(target)
        if state is None or self.g_n <= 0:
            return 0.0
        return state.w[-1].base_n / self.g_n

    def volume(self, target: str) -> float:
        """The target's decayed follow count (about its follows over the last few days)."""
        state = self.targets.get(target)
        if state is None:
            return 0.0
        return state.vol * math.exp(-((self._g_ts or 0.0) - state.vol_ts) / self._tau)

    # -- the per-event path --------------------------------------------------------------------

    def shares(self, state: TargetState, i: int) -> tuple[float, float]:
        """(risky share, first-seen share) of the target's usual followers at scale ``i``, shrunk
        towards the global follower population like ``null``."""
        w = state.w[i]
        return self._shrunk(w.base_k, w.base_n, self.g_k), self._shrunk(w.base_f, w.base_n, self.g_f)

    def _shrunk(self, count: float, base_n: float, global_count: float) -> float:
        """A baseline share ``count / base_n`` shrunk towards the global share ``global_count / g_n``
        with ``prior_strength`` pseudo-followers."""
        a = self.settings.prior_strength
        return (count + a * global_count / max(self.g_n, 1e-9)) / (base_n + a)

    def observe(self, event: FollowEvent, risk: float, first_seen: bool = False) -> list[Finding]:
        """``risk``: the actor's account risk now; ``first_seen``: this is the first event the
        detectors have seen from the actor (no history here to vouch for it)."""
        if event.action != "follow":
            return []
        s = self.settings
        ts = event.ts
        self._decay_global(ts)
        r = min(risk, self.score_cap)
        risky = r >= s.member_min_risk
        self.g_n += 1.0
        self.g_s += r
        self.g_ss += r * r
        self.g_k += risky
        self.g_f += first_seen
        self.g_vol += 1.0
        nscales = len(self._scales)
        state = self.targets.get_or_create(event.target, lambda: TargetState(nscales))
        if state.vol_ts:
            state.vol = state.vol * math.exp(-(ts - state.vol_ts) / self._tau) + 1.0
        else:
            state.vol, state.since = 1.0, ts
        state.vol_ts = ts
        flagged_now = state.flag_until > ts

        best_log_p = 0.0
        best: tuple[int, float, float, float] | None = None
        min_followers = s.min_followers
        for i, scale in enumerate(self._scales):
            w = state.w[i]
            bucket = int(ts // scale)
            if bucket != w.bucket:
                if w.bucket >= 0:
                    self._fold(state, i, bucket - w.bucket, flagged_now)
                if bucket == w.bucket + 1:
                    w.prev_n, w.prev_s, w.prev_k, w.prev_f = w.cur_n, w.cur_s, w.cur_k, w.cur_f
                else:
                    w.prev_n = w.prev_s = w.prev_k = w.prev_f = 0.0
                w.cur_n = w.cur_s = w.cur_ss = w.cur_k = w.cur_f = 0.0
                w.bucket = bucket
            w.cur_n += 1.0
            w.cur_s += r
            w.cur_ss += r * r
            if risky:
                w.cur_k += 1.0
            if first_seen:
                w.cur_f += 1.0
            left = 1.0 - (ts - bucket * scale) / scale
            n = w.cur_n + w.prev_n * left
            if n < min_followers or (i and w.base_n <= 0.0):
                continue
            # Two tests of "drawn unlike the target's usual followers", Bonferroni over both and
            # over the scales: the mean risk (Bernstein), and the share of risky followers (a
            # binomial count) — the second has the power when an order's accounts are each only
            # mildly suspicious but there are many of them.
            k = w.cur_k + w.prev_k * left
            log_p = 0.0
            mu0, var0 = self.null(state, i)
            total = w.cur_s + w.prev_s * left
            excess = total - n * mu0
            if excess >= s.min_mean_excess * n:
                log_p = bernstein_log_sf(excess, n, var0, self.score_cap - mu0)
            p_risky = self._shrunk(w.base_k, w.base_n, self.g_k)
            if k / n - p_risky >= s.min_share_excess:
                log_p = min(log_p, binomial_log_sf(k, n, p_risky))
            log_p += self._log_tests
            if log_p < best_log_p:
                best_log_p = log_p
                best = (i, n, total, mu0)

        out: list[Finding] = []
        self._remember(state, ts, event.actor, r, first_seen)
        if best is not None and self._rejects(event.target, best_log_p, ts):
            if not flagged_now:
                i, n, total, mu0 = best
                window = self._scales[i]
                lift = n / max(self._usual(state, i, ts), 1.0)
                windows = [self._window(state, j, ts) for j in range(nscales)]
                # Membership is judged on the window (up to the flagged one) where the excess
                # stands out most against the usual traffic: the sharpest view of the order.
                j = max((j for j in range(i + 1) if windows[j][0] >= s.min_followers),
                        key=lambda j: windows[j][0] / max(self._usual(state, j, ts), 0.5))
                state.flag_scale = j
                # Freeze the usual rate while flagged: the order's own followers must not become
                # the "usual" traffic its later followers are told apart from.
                # Without any history, half a usual follower per window stands in (conservative).
                rate = self._rate(state, j)
                state.flag_rate = rate if rate is not None else 0.5 / self._scales[j]
                state.member_classes = 0
                n_j = windows[j][0]
                fake_share = max(0.0, n_j - state.flag_rate * self._scales[j]) / n_j
                state.flagged = flag = TargetFlag(event.target, ts, window, round(n), fake_share, total / n, mu0,
                                                  max(best_log_p, _LOG_SF_FLOOR), lift)
                members = self._label_classes(state, self._member_classes(state, j, windows[j], self._scales[j], ts),
                                              ts)
                # The target is reported ("suspected purchased followers") once some of its new
                # followers are confidently the excess — now, or later in the surge. A window that
                # is only somewhat unusual (a popular account that an order's accounts also follow
                # as camouflage) freezes the baseline and keeps watching, but files nothing.
                state.reported = bool(members)
                if members:
                    out.append(flag)
                    out.extend(members)
                state.flag_until = ts + s.flag_ttl_s
                return out
            state.flag_until = ts + s.flag_ttl_s
        if flagged_now and self._surging(state, ts):
            i = state.flag_scale
            # As the order goes on the posterior firms up: a class of follower (risky or not,
            # first seen or not) that becomes a member class labels its earlier followers too.
            mine = member_class(risky, first_seen)
            known = state.member_classes
            members = self._label_classes(state, self._member_classes(state, i, self._window(state, i, ts),
                                                                      self._scales[i], ts), ts)
            if members and not state.reported and state.flagged is not None:
                state.reported = True
                out.append(state.flagged)
            out.extend(members)
            if known & mine:  # (a newly labelled class already included this follower)
                out.append(AccountFlag(event.actor, ts, f"burst:{event.target}", r))
        return out

    def _window(self, state: TargetState, i: int, ts: float) -> tuple[float, float, float]:
        """(followers, risky, first seen) in scale ``i``'s sliding window ending at ``ts``."""
        scale = self._scales[i]
        w = state.w[i]
        left = 1.0 - (ts - w.bucket * scale) / scale
        return w.cur_n + w.prev_n * left, w.cur_k + w.prev_k * left, w.cur_f + w.prev_f * left

    def _label_classes(self, state: TargetState, classes: int, ts: float) -> list[AccountFlag]:
        """Label the remembered followers of the flagged window (and the one before it: an order's
        first followers arrived before the test had enough of them) in member ``classes`` not
        labelled yet under this flag."""
        new = classes & ~state.member_classes
        if not new:
            return []
        state.member_classes |= new
        flag = state.flagged
        since = (flag.ts if flag is not None else ts) - 2.0 * self._scales[state.flag_scale]
        source = f"burst:{flag.target}" if flag is not None else "burst"
        return [AccountFlag(a, ts, source, x) for t, a, x, first in state.suspects
                if t > since and new & member_class(x >= self.settings.member_min_risk, first)]

    def _member_classes(self, state: TargetState, i: int, window_counts: tuple[float, float, float], window: float,
                        ts: float) -> int:
        """The member classes (``followers.membership``) of scale ``i``'s window under the flag:
        its usual count from the rate frozen at the flag, the usual traits from the baseline."""
        n, k, f = window_counts
        p_k, p_f = self.shares(state, i)
        return member_classes(n, k, f, state.flag_rate * window, p_k, p_f, self.settings.member_posterior)

    def _rate(self, state: TargetState, i: int) -> float | None:
        """The target's usual followers per second, from scale ``i``'s closed windows (counted with
        bounded influence, frozen while flagged), else from the largest smaller scale that has
        closed windows (more recent traffic, a conservative, higher rate); None until a scale's
        baseline covers at least one whole window (a target first seen seconds before its first
        window closed would otherwise take a burst's first seconds for its usual rate)."""
        for j in range(i, -1, -1):
            w = state.w[j]
            if w.base_t >= self._scales[j]:
                return (w.base_n + 1.0) / w.base_t  # one pseudo-follower: an unseen rate is not zero
        return None

    def _usual(self, state: TargetState, i: int, ts: float) -> float:
        """The target's usual number of followers in a window of scale ``i`` (0 for a target with
        no closed window yet); while the target is flagged, the rate frozen at the flag."""
        scale = self._scales[i]
        if state.flag_until > ts:
            return state.flag_rate * scale
        rate = self._rate(state, i)
        return 0.0 if rate is None else rate * scale

    def _surging(self, state: TargetState, ts: float) -> bool:
        """Is the target still receiving an excess of followers *now*? A flag lasts
        ``flag_ttl_s``, but a later follower is labelled by it only while the surge goes on: once
        the target is back to its usual trickle, a new follower is most likely one of its usual
        ones, whatever the flag still says. "Now" is a window up to the flag's scale but never the
        longest one (a day-long window stays high for a day after a one-hour order ended): some
        such window holds twice its usual count, significantly (Poisson, p <= 1 %, the usual
        count at least half a follower)."""
        for j in range(min(state.flag_scale, len(self._scales) - 2) + 1):
            n = self._window(state, j, ts)[0]
            usual = max(self._usual(state, j, ts), 0.5)
            if n >= 2.0 * usual and poisson_log_sf(n, usual) <= _LOG_SURGE_P:
                return True
        return False

    def _fold(self, state: TargetState, i: int, windows: int, flagged: bool) -> None:
        """Scale ``i``'s window closed (``windows`` windows passed): fold it into that scale's
        baseline, decayed by the time that passed — unless the target is flagged (an attack must
        not become the baseline it is judged against)."""
        scale = self._scales[i]
        win = state.w[i]
        k = math.exp(-scale * windows / self._tau)
        win.base_n *= k
        win.base_s *= k
        win.base_ss *= k
        win.base_k *= k
        win.base_f *= k
        win.base_t *= k
        n = win.cur_n
        start = win.bucket * scale
        covered = min(scale, start + scale - state.since)  # the target's first window is partial
        if not flagged:
            if n:
                # Bounded influence: a window counts for at most twice the target's usual number
                # of followers in it (from the baseline *before* this window), so a surge the test
                # did not (yet) flag cannot become the baseline it is judged against ten minutes
                # later, while steady traffic and steady growth fold in fully. Until the target
                # has a baseline, the window folds in fully.
                rate = self._rate(state, i)
                weight = 1.0 if rate is None else min(1.0, 2.0 * max(rate * covered, 1.0) / n)
                win.base_n += weight * n
                win.base_s += weight * win.cur_s
                win.base_ss += weight * win.cur_ss
                win.base_k += weight * win.cur_k
                win.base_f += weight * win.cur_f
            # The time the baseline covers (empty windows in between included): followers per
            # second of the usual traffic are base_n / base_t, both decayed alike.
            win.base_t += covered + min(windows - 1, 64) * scale

    def _remember(self, state: TargetState, ts: float, actor: str, r: float, first_seen: bool) -> None:
        """Keep every follower of the trailing window (bounded): membership is decided when the
        target is flagged, and may include followers with no risk of their own."""
        suspects = state.suspects
        horizon = ts - 2.0 * self._scales[-1]
        while suspects and suspects[0][0] <= horizon:
            suspects.popleft()
            self.suspects_total -= 1
        if len(suspects) >= self.settings.suspects_per_target:
            suspects.popleft()
            self.suspects_total -= 1
        if self.suspects_total >= self.suspects_cap:
            self.suspects_dropped += 1
            return
        suspects.append((ts, actor, r, first_seen))
        self.suspects_total += 1

    def _rejects(self, target: str, log_p: float, ts: float) -> bool:
        s = self.settings
        log_q = math.log(s.fdr)
        if log_p > log_q:
            return False
        self._candidates[target] = (log_p, ts)
        if ts >= self._next_bh:
            horizon = ts - self._scales[-1]
            stale = [t for t, (_, at) in self._candidates.items() if at <= horizon]
            for t in stale:
                del self._candidates[t]
            m = max(len(self.targets), len(self._candidates), s.min_family)
            # BH over the family: p-values of targets without a candidate are > fdr and never rejected,
            # so padding the family to m with ones gives the same cutoff as sorting all m.
            logs = [lp for lp, _ in self._candidates.values()]
            self._cutoff = bh_cutoff(logs, s.fdr * len(logs) / m) if logs else -math.inf
            self._next_bh = ts + s.bh_interval_s
        m = max(len(self.targets), s.min_family)
        return log_p <= max(self._cutoff, log_q - math.log(m))
