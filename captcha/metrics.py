"""CAPTCHA metrics: challenges issued, solved, failed and replayed by level and rule (scope),
clearances accepted and refused, and how long solving took (issue to verify, server-measured:
the solve time a client reports is its own claim)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["CaptchaMetrics"]

SOLVE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


class CaptchaMetrics:
    """Built once per process into the gateway's registry; runtimes rebuilt on reload share it."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry(auto_describe=True)
        self.registry = r
        self.challenges = Counter(
            "tsgate_captcha_challenges", "Proof-of-work challenges by outcome "
            "(issued, solved, failed, expired, replayed), level and rule (scope).",
            ["outcome", "level", "rule"], registry=r)
        self.clearances = Counter(
            "tsgate_captcha_clearances", "Clearances presented for a challenge, by result "
            "(accepted, spent, foreign, tampered, expired, insufficient) and rule (scope).",
            ["result", "rule"], registry=r)
        self.escalations = Counter(
            "tsgate_captcha_escalations", "Challenges turned into deny or hold by the ladder.",
            ["then", "rule"], registry=r)
        self.providers = Counter(
            "tsgate_captcha_provider_verifications", "Third-party CAPTCHA verifications by provider and result.",
            ["provider", "result"], registry=r)
        self.solve_seconds = Histogram(
            "tsgate_captcha_solve_seconds", "Seconds from issuing a challenge to its verified solution.",
            ["level"], buckets=SOLVE_BUCKETS, registry=r)

    def challenge(self, outcome: str, level: int, rule: str) -> None:
        self.challenges.labels(outcome, str(level), rule).inc()
