"""Prometheus metrics in an explicit registry (one per app; tests build their own).

Label children are cached per label tuple: ``labels()`` does a lock + dict lookup that costs
more than the increment itself on the request path."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["CounterSource", "Metrics"]

CounterSource = Callable[[], Iterable[tuple[Sequence[str], float]]]


class _CallbackCounters(Collector):
    """A counter family read at scrape time from a callback (counts kept by a guard itself)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], source: CounterSource) -> None:
        self.name, self.documentation, self.labels, self.source = name, documentation, list(labels), source

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, count in self.source():
            family.add_metric(list(values), count)
        yield family


class _CallbackGauges(_CallbackCounters):
    """A gauge family read at scrape time from a callback (sizes of state a component keeps)."""

    def collect(self) -> Iterable[GaugeMetricFamily]:  # type: ignore[override]
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, value in self.source():
            family.add_metric(list(values), value)
        yield family

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tsgate_requests", "Requests by rule, decision and response status.",
            ["rule", "decision", "status"], registry=r,
        )
        self.latency = Histogram(
            "tsgate_request_duration_seconds", "Time from request to last response byte sent.",
            ["rule"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream_errors = Counter(
            "tsgate_upstream_errors", "Upstream failures by kind.", ["reason"], registry=r,
        )
        self.guard_errors = Counter(
            "tsgate_guard_errors", "Guards that raised, by guard and the on_error applied.",
            ["guard", "applied"], registry=r,
        )
        self.shadow = Counter(
            "tsgate_shadow_decisions", "What shadow rules would have done.", ["rule", "outcome"], registry=r,
        )
        self.refused = Counter(
            "tsgate_refused_requests", "Requests refused before routing (bad path, headers, ...).",
            ["reason"], registry=r,
        )
        self.reloads = Counter("tsgate_policy_reloads", "Policy reloads by result.", ["result"], registry=r)
        self.policy_info = Gauge("tsgate_policy_loaded_timestamp_seconds", "When the policy was loaded.",
                                 registry=r)
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}

    def add_counter_source(self, name: str, documentation: str, labels: Sequence[str],
                           source: CounterSource) -> None:
        self.registry.register(_CallbackCounters(name, documentation, labels, source))

    def add_gauge_source(self, name: str, documentation: str, labels: Sequence[str],
                         source: CounterSource) -> None:
        self.registry.register(_CallbackGauges(name, documentation, labels, source))

    def observe_request(self, rule: str, decision: str, status: int, seconds: float) -> None:
        key = (rule, decision, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(rule, decision, str(status))
        counter.inc()
        hist = self._latency.get(rule)
        if hist is None:
            hist = self._latency[rule] = self.latency.labels(rule)
        hist.observe(seconds)
