"""One detection engine, the same code in the gateway, in ``tsgate followers eval`` and in tests.

``FollowDetection.observe(event)`` scores the actor, feeds the burst and lockstep detectors and
returns findings; each account is flagged at most once per label lifetime. State is bounded by
the caps in ``DetectionSettings``; ``stats()`` reports sizes and evictions for metrics."""

from __future__ import annotations

from dataclasses import dataclass

from followers.bounded import LRU
from followers.burst import BurstDetector
from followers.config import DetectionSettings
from followers.events import FollowEvent
from followers.findings import AccountFlag, Finding
from followers.lockstep import LockstepDetector
from followers.risk import RiskScore, RiskTracker

__all__ = ["FollowDetection", "Observation"]


@dataclass(frozen=True, slots=True)
class Observation:
    risk: RiskScore
    findings: list[Finding]


class FollowDetection:
    def __init__(self, settings: DetectionSettings | None = None) -> None:
        self.settings = s = settings or DetectionSettings()
        self.risk = RiskTracker(s.risk)
        self.burst = BurstDetector(s.burst, score_cap=s.risk.score_cap)
        hub = s.lockstep.hub_share
        self.lockstep = LockstepDetector(s.lockstep, is_hub=lambda target: self.burst.share(target) >= hub,
                                         volume=self.burst.volume)
        self._flagged: LRU[str, float] = LRU(s.risk.max_accounts)
        self.events = 0

    def observe(self, event: FollowEvent) -> Observation:
        self.events += 1
        risk = self.risk.observe(event)
        findings = self.burst.observe(event, risk.score, risk.first_seen)
        findings.extend(self.lockstep.observe(event, len(self.lockstep.recent)))
        if not findings:
            return Observation(risk, findings)
        out: list[Finding] = []
        ttl = self.settings.label_ttl_s
        for finding in findings:
            if isinstance(finding, AccountFlag):
                until = self._flagged.get(finding.actor)
                if until is not None and until > finding.ts:
                    continue
                self._flagged.put(finding.actor, finding.ts + ttl)
            out.append(finding)
        return Observation(risk, out)

    def is_flagged(self, actor: str, now: float) -> bool:
        until = self._flagged.get(actor)
        return until is not None and until > now

    def stats(self) -> dict[str, int]:
        return {
            "events": self.events,
            "accounts": len(self.risk.accounts),
            "accounts_evicted": self.risk.accounts.evictions,
            "networks": len(self.risk.networks),
            "user_agents": len(self.risk.user_agents),
            "targets": len(self.burst.targets),
            "targets_evicted": self.burst.targets.evictions,
            "suspects": self.burst.suspects_total,
            "suspects_dropped": self.burst.suspects_dropped,
            "lockstep_pairs": len(self.lockstep.pairs),
            "lockstep_pairs_evicted": self.lockstep.pairs.evictions,
            "cohort_accounts": len(self.lockstep.parent),
        }
