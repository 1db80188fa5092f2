"""What the detectors find, as plain values (rules decide, sinks act — house style 13).

The engine returns these; the guard turns them into labels in the StateStore and items in the
review queue; ``tsgate followers eval`` scores them against ground truth."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AccountFlag", "CohortFound", "Finding", "TargetFlag"]


@dataclass(frozen=True, slots=True)
class TargetFlag:
    """"Suspected purchased followers": ``target``'s new followers over the trailing ``window_s``
    are far riskier than its usual followers. ``fake_share`` is the estimated share of those
    followers that are not the target's usual traffic (the window's excess over its usual rate:
    the order, when the test is right); ``log_p`` the burst test's log p-value bound."""

    target: str
    ts: float
    window_s: float
    followers: int
    fake_share: float
    mean_risk: float
    baseline_risk: float
    log_p: float
    volume_lift: float

    def evidence(self) -> str:
        return (f"{self.followers} new followers in {self.window_s:g}s, {self.fake_share:.0%} look fake; mean risk "
                f"{self.mean_risk:.2f} vs usual {self.baseline_risk:.2f}; volume x{self.volume_lift:.1f}; "
                f"log p <= {self.log_p:.1f}")


@dataclass(frozen=True, slots=True)
class CohortFound:
    """Accounts that followed the same targets in the same time buckets far more often than
    independent accounts would. ``cohort_id`` is stable while the cohort grows; the item is
    re-reported (same id) each time it doubles."""

    cohort_id: str
    ts: float
    accounts: tuple[str, ...]
    targets: tuple[str, ...]
    log_p: float

    def evidence(self) -> str:
        return (f"{len(self.accounts)} accounts followed {len(self.targets)} targets in lockstep; "
                f"strongest pair log p <= {self.log_p:.1f}")


@dataclass(frozen=True, slots=True)
class AccountFlag:
    """``actor`` looks like a fake follower. ``source`` says why: ``burst:<target>`` or
    ``cohort:<id>``; ``risk`` is the account's risk score at the time."""

    actor: str
    ts: float
    source: str
    risk: float


Finding = TargetFlag | CohortFound | AccountFlag
