"""Wiring only: build stores, guards and both apps from a loaded policy, and swap policies on
reload. Nothing here decides anything about a request."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from authn.db import Database
from authn.endpoints import AuthEndpoints
from authn.runtime import AuthnRuntime
from captcha.endpoints import CaptchaEndpoints
from captcha.metrics import CaptchaMetrics
from captcha.page import ChallengePage
from captcha.runtime import CaptchaRuntime
from followers.eventlog import EventLogConsumer
from followers.events import FollowEvent
from followers.guard import FollowGuard
from gateway.core.asgi import Receive, Send
from gateway.core.clock import Clock, SystemClock
from gateway.core.context import Principal, RequestContext
from gateway.core.decisions import ALLOW, Allow
from gateway.core.errors import ConfigError, StoreError
from gateway.core.netaddr import TrustedProxies
from gateway.core.paths import PathCanonicalizer
from gateway.core.pipeline import Outcome
from gateway.core.services import GuardServices
from gateway.core.state import StateStore, store_from_url
from gateway.observe.decisionlog import DecisionLog
from gateway.observe.metrics import Metrics
from gateway.proxy.forward import BodyPlan
from gateway.proxy.headers import Inbound
from gateway.proxy.upstream import UpstreamPool
from moderation.records import ReviewQueue
from policies.compiled import CompiledPolicy
from policies.features import build_authn, build_captcha, build_followers, build_limiter, build_moderation
from policies.loader import LoadedPolicy, PolicyError, load_policy, load_policy_text, with_overrides
from policies.model import Policy
from policies.registry import GuardRegistry, default_registry
from ratelimit.guard import RateLimitGuard
from review.appeals import AppealEndpoint
from review.priority import PrioritySink
from review.runtime import ReviewRuntime

__all__ = ["Gateway", "InternalHandler", "ReloadResult"]


def _by_kind(counts: dict[str, int]) -> list[tuple[tuple[str], float]]:
    """A ``{kind: n}`` map as the samples of a metric family labelled by ``kind``."""
    return [((kind,), float(n)) for kind, n in counts.items()]


InternalHandler = Callable[[RequestContext, Receive, Send], Awaitable[int]]

log = logging.getLogger("tsgate")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    sha256: str
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    version: int
    sha256: str
    source: str
    loaded_at: float
    actor: str
    text: str = field(repr=False, default="")  # kept for diffs and rollback (the last MAX_VERSION_TEXTS)


MAX_VERSION_TEXTS = 50
audit_log = logging.getLogger("tsgate.audit")


class Gateway:
    """One gateway process's state: the compiled policy (swapped whole on reload), the upstream
    pool, the state store, metrics and the decision log."""

    def __init__(
        self,
        loaded: LoadedPolicy,
        *,
        store: StateStore | None = None,
        clock: Clock | None = None,
        registry: GuardRegistry | None = None,
        decision_log: DecisionLog | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.overrides = dict(overrides or {})
        loaded = with_overrides(loaded, self.overrides)
        policy = loaded.policy
        self.clock = clock or SystemClock()
        self.store = store or store_from_url(policy.state, clock=self.clock)
        self.services = GuardServices(self.store, self.clock)
        self.metrics = Metrics()
        self.decisions = decision_log or DecisionLog(
            to_stderr=policy.log.decisions,
            path=policy.log.decision_log,
            max_bytes=policy.log.decision_log_max_bytes,
            backups=policy.log.decision_log_backups,
        )
        # One engine for every feature that keeps durable records (accounts, the review queue).
        self.database = Database(policy.database)
        self.authn = build_authn(policy, self.store, self.clock, database=self.database)
        # Every review item the gateway writes gets priority = score x reach (review.priority).
        self.review_sink = PrioritySink(ReviewQueue(self.database), audience=self._audience)
        self.moderation = build_moderation(policy, self.database, sink=self.review_sink)
        self.followers = build_followers(policy, self.store, self.database, sink=self.review_sink)
        # The review queue and console (admin listener) and appeals (proxy listener); a reload
        # applies a new review: section in place (lease, appeal limits, webhook, forward retries).
        self.review: ReviewRuntime | None = ReviewRuntime(
            self.database, policy.review, upstream_url=lambda: self.policy.upstream.url, authn=lambda: self.authn,
            clock=self.clock, labels=lambda: self.followers.labels if self.followers is not None else None,
        ) if self._uses_database() else None
        self._flusher: asyncio.Task[None] | None = None
        # Set by the server on SIGTERM: /readyz turns false before the proxy stops accepting.
        self.draining = False
        self._consumer: asyncio.Task[None] | None = None
        self.limiter = build_limiter(policy)
        self.captcha_metrics = CaptchaMetrics(self.metrics.registry)
        self.captcha: CaptchaRuntime = build_captcha(policy, self.store, self.clock, metrics=self.captcha_metrics,
                                                     identify=self._identify)
        self.registry = registry or default_registry(authn=self.authn, limiter=self.limiter, captcha=self.captcha,
                                                     moderation=self.moderation, followers=self.followers)
        self.internal: dict[str, InternalHandler] = {}
        self.canonicalize = PathCanonicalizer()
        self.allow_outcome = Outcome(ALLOW)
        self.no_body = BodyPlan()
        self.versions: list[PolicyVersion] = []
        self.compiled = CompiledPolicy(loaded, self.registry, self.services)
        self._apply(self.compiled, actor="startup")
        self.pool = self._new_pool(policy)
        self.metrics.add_counter_source(
            "tsgate_ratelimit_decisions", "Rate-limit outcomes per limit (since the policy was loaded).",
            ["limit", "outcome"], self._ratelimit_counts)
        self.metrics.add_counter_source(
            "tsgate_redis_commands", "Redis commands sent and the round trips (pipelines) that carried them, "
            "per client (state store, rate limiter): commands / round_trips is the batching factor.",
            ["client", "kind"], self._redis_counts)
        self.metrics.add_counter_source(
            "tsgate_followers_follows", "Follow requests seen by the follow guards, by route and outcome "
            "(checked, recorded, denied, challenged, shadow, ...; since the policy was loaded).",
            ["route", "outcome"], self._follow_counts)
        self.metrics.add_counter_source(
            "tsgate_followers_findings", "What the fake-follower detectors' findings became: labels, review "
            "items and their errors (since the process started).", ["kind"], self._follow_findings)
        self.metrics.add_gauge_source(
            "tsgate_followers_detector_state", "Fake-follower detector state: events seen, accounts, targets, "
            "networks, lockstep pairs tracked, and evictions from the capped maps.", ["kind"], self._follow_state)

    # -- policy ---------------------------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        return self.compiled.policy

    def _new_pool(self, policy: Policy) -> UpstreamPool:
        up = policy.upstream
        return UpstreamPool(up.host, up.port, connect_timeout=up.connect_timeout,
                            max_connections=up.max_connections)

    def _apply(self, compiled: CompiledPolicy, actor: str) -> None:
        policy = compiled.policy
        self.internal = AuthEndpoints(self.authn, policy.prefix, resolver=self.captcha).routes() if (
            self.authn is not None) else {}
        self.challenge_page = ChallengePage(policy.prefix)
        self.internal.update(CaptchaEndpoints(self.captcha, self.challenge_page).routes())
        if self.review is not None:
            self.internal.update(AppealEndpoint(self.review, self.store, lambda: self.authn, policy.prefix).routes())
        self.trusted = TrustedProxies(policy.trusted_proxies)
        hosts = policy.request.allowed_hosts
        self.allowed_hosts: tuple[str, ...] | None = tuple(h.lower() for h in hosts) if hosts else None
        self.read_timeout = policy.upstream.read_timeout
        self._upstream_netloc = policy.upstream.netloc.encode("ascii")
        self.compiled = compiled
        previous = self.versions[-1].sha256 if self.versions else None
        self.versions.append(PolicyVersion(len(self.versions) + 1, compiled.sha256, compiled.loaded.source,
                                           self.clock.now(), actor, compiled.loaded.text))
        if len(self.versions) > MAX_VERSION_TEXTS:  # old texts go; their history line stays
            old = self.versions[-MAX_VERSION_TEXTS - 1]
            self.versions[-MAX_VERSION_TEXTS - 1] = replace(old, text="")
        # The audit trail: who loaded which policy over which, as one JSON line.
        audit_log.info(json.dumps({"audit": "policy.loaded", "ts": round(self.clock.now(), 3), "actor": actor,
                                   "version": len(self.versions), "sha256": compiled.sha256,
                                   "previous_sha256": previous, "source": compiled.loaded.source}))
        self.metrics.policy_info.set(self.clock.now())

    def reload(self, source: str | None = None, *, text: str | None = None, actor: str = "api") -> ReloadResult:
        """Load, validate and compile a new policy, then swap it in. On any error the running
        policy stays and the result says why."""
        try:
            loaded = load_policy_text(text, source or "<api>") if text is not None else load_policy(
                source or self.compiled.loaded.source)
            loaded = with_overrides(loaded, self.overrides)
            new = loaded.policy
            old = self.policy
            if new.state != old.state or new.database != old.database:
                raise PolicyError(loaded.source, ["state/database: changing stores needs a restart"])
            if new.ratelimit != old.ratelimit:
                raise PolicyError(loaded.source, ["ratelimit: store settings (timeout, breaker, memory bound) "
                                                  "need a restart"])
            if (new.auth is None) != (self.authn is None):
                raise PolicyError(loaded.source, ["auth: adding or removing the auth section needs a restart"])
            authn = self._reload_authn(new)
            if not self._uses_database() and any(r.moderation or r.follow for r in new.routes):
                raise PolicyError(loaded.source, ["moderation/follow: the first route that writes review items "
                                                  "needs a restart (the review table is created at start)"])
            if self.followers is None and any(r.follow for r in new.routes):
                raise PolicyError(loaded.source, ["follow: the first follow route needs a restart (its "
                                                  "detectors and flush timer start with the process)"])
            moderation = build_moderation(new, self.database, previous=self.moderation, sink=self.review_sink)
            followers = build_followers(new, self.store, self.database, previous=self.followers,
                                        sink=self.review_sink)
            review = self.review.prepare(new.review) if self.review is not None else None
            # Same key ring and metrics: clearances issued before the reload stay valid.
            captcha = build_captcha(new, self.store, self.clock, metrics=self.captcha_metrics,
                                    identify=self._identify, keys=self.captcha.sealer.keys)
            registry = default_registry(authn=authn, limiter=self.limiter, captcha=captcha, moderation=moderation,
                                        followers=followers)
            compiled = CompiledPolicy(loaded, registry, self.services)
        except ConfigError as exc:
            problems = exc.problems if isinstance(exc, PolicyError) else [str(exc)]
            self.metrics.reloads.labels("rejected").inc()
            log.error("policy reload rejected, keeping %s: %s", self.compiled.sha256[:12], exc)
            return ReloadResult(False, self.compiled.sha256, problems)
        self.registry = registry
        self.captcha = captcha
        self.moderation = moderation
        if self.review is not None and review is not None:
            self.review.apply(review)
        if followers is not None:
            self.followers = followers
        if authn is not None and authn is not self.authn:
            old_authn, self.authn = self.authn, authn
            if old_authn is not None and old_authn.hasher is not authn.hasher:
                old_authn.hasher.close()  # queued hashes still finish; the database engine is shared
        if new.upstream != old.upstream:
            old_pool, self.pool = self.pool, self._new_pool(new)
            old_pool.closed = True  # in-flight requests finish; idle connections close on release
        self._apply(compiled, actor)
        self.metrics.reloads.labels("applied").inc()
        log.info("policy %s loaded by %s", compiled.sha256[:12], actor)
        return ReloadResult(True, compiled.sha256)

    def _reload_authn(self, policy: Policy) -> AuthnRuntime | None:
        """A new identity runtime for the new auth settings and the key files as they are now
        (`tsgate keys rotate` then reload), sharing the database engine."""
        if self.authn is None:
            return None
        return build_authn(policy, self.store, self.clock, database=self.authn.database, previous=self.authn)

    def _audience(self, account: str) -> float | None:
        """Followers the follow detectors observed for ``account`` (as a follow target), if any."""
        return self.followers.engine.burst.volume(account) if self.followers is not None else None

    async def _identify(self, ctx: RequestContext) -> Principal | None:
        """Who a request's credential names, for binding clearances to accounts (CAPTCHA)."""
        if self.authn is None:
            return None
        return (await self.authn.authenticate(ctx)).principal

    def _redis_counts(self) -> list[tuple[tuple[str, str], float]]:
        pipes = {"state": getattr(self.store, "pipeline", None),
                 "ratelimit": self.limiter.pipe}
        return [((client, kind), float(getattr(pipe, kind))) for client, pipe in pipes.items() if pipe is not None
                for kind in ("commands", "round_trips")]

    def _ratelimit_counts(self) -> list[tuple[tuple[str, str], float]]:
        """Summed over guards: a policy-wide limit has a guard instance in every rule."""
        totals: dict[tuple[str, str], float] = {}
        for rule in (*self.compiled.rules, self.compiled.default, self.compiled.internal):
            for guard in rule.pipeline.guards:
                if isinstance(guard, RateLimitGuard):
                    for limit, counts in guard.counters.items():
                        for outcome, n in counts.items():
                            totals[(limit, outcome)] = totals.get((limit, outcome), 0.0) + n
        return list(totals.items())

    def _follow_counts(self) -> list[tuple[tuple[str, str], float]]:
        totals: dict[tuple[str, str], float] = {}
        for rule in self.compiled.rules:
            for guard in rule.pipeline.guards:
                if isinstance(guard, FollowGuard):
                    for outcome, n in guard.counters.items():
                        totals[(rule.id, outcome)] = totals.get((rule.id, outcome), 0.0) + n
        return list(totals.items())

    def _follow_findings(self) -> list[tuple[tuple[str], float]]:
        return _by_kind(self.followers.actions.counters if self.followers is not None else {})

    def _follow_state(self) -> list[tuple[tuple[str], float]]:
        return _by_kind(self.followers.engine.stats() if self.followers is not None else {})

    async def start(self) -> None:
        """Async start-up: connect to the state store and the limiter's storage before traffic
        (a cold Redis Cluster client would spend the first checks' timeouts discovering slots),
        then database migrations for features that keep durable records."""
        try:
            state_ok = await asyncio.wait_for(self.store.ping(), 2.0)
        except (TimeoutError, StoreError):
            state_ok = False
        if not state_ok or not await self.limiter.warm_up():
            log.warning("the state store did not answer at start; guards follow their fail modes until it does")
        if self.authn is not None:
            await self.authn.start()
        elif self._uses_database():
            await self.database.migrate()
        if self.review is not None:
            self.review.start()  # retries review deliveries (webhooks, approved forwards) left due
        if self.followers is not None:
            loop = asyncio.get_running_loop()
            self._flusher = loop.create_task(self._flush_follow_reviews())
            if not self.followers.inline:
                self._consumer = loop.create_task(self._consume_follow_events())

    def _uses_database(self) -> bool:
        return self.authn is not None or self.moderation is not None or self.followers is not None

    async def _consume_follow_events(self, warm_up: float = 600.0, idle: float = 0.5) -> None:
        """Feed this worker's detectors from the shared Redis Stream (every worker's follows),
        starting with the last ``warm_up`` seconds so a restarted worker has recent context."""
        followers = self.followers
        if followers is None:
            return

        async def handle(event: FollowEvent) -> None:
            current = self.followers or followers
            observation = current.engine.observe(event)
            await current.actions.apply(observation.findings, event.ts)

        consumer = EventLogConsumer(followers.log, handle, after=f"{int((self.clock.now() - warm_up) * 1000)}-0")
        while True:
            try:
                await consumer.poll(1000, block=idle)  # XREAD BLOCK: another gateway's follow in ~1 RTT
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: detectors pause, the guard keeps serving
                log.warning("reading the follow-event stream failed; retrying", exc_info=True)
                await asyncio.sleep(5 * idle)

    async def _flush_follow_reviews(self, every: float = 30.0) -> None:
        """Cohorts are written once they stop growing; without new follows nothing else asks."""
        while True:
            await asyncio.sleep(every)
            if self.followers is not None:
                try:
                    await self.followers.actions.flush(self.clock.now())
                except Exception:  # a database hiccup must not end the timer; the next tick retries
                    log.exception("writing settled follower cohorts failed")

    # -- request helpers used by the proxy --------------------------------------------------------
    def host_allowed(self, host: bytes | None) -> bool:
        if self.allowed_hosts is None:
            return True
        if host is None:
            return False
        name = host.decode("latin-1").lower()
        if name.startswith("["):
            name = name[: name.find("]") + 1]
        else:
            name = name.rsplit(":", 1)[0]
        for allowed in self.allowed_hosts:
            if name == allowed or (allowed.startswith("*.") and name.endswith(allowed[1:])):
                return True
        return False

    def upstream_host(self, inbound: Inbound) -> bytes:
        if self.policy.upstream.host_header == "preserve" and inbound.host:
            return inbound.host
        return self._upstream_netloc

    def peer_trusted(self, scope: dict[str, Any]) -> bool:
        client = scope.get("client")
        return client is not None and self.trusted.trusts(client[0])

    def ws_url(self, target: bytes, query: bytes) -> str:
        url = "ws://" + self.policy.upstream.netloc + target.decode("ascii")
        return url + ("?" + query.decode("latin-1") if query else "")

    # -- observability ----------------------------------------------------------------------------
    def count_failures(self, outcome: Outcome) -> None:
        for failure in outcome.failures:
            self.metrics.guard_errors.labels(failure.guard, failure.applied).inc()

    def record(self, ctx: RequestContext, outcome: Outcome, status: int, started: float,
               reason: str | None = None) -> None:
        elapsed = time.perf_counter() - started
        decision = outcome.decision
        kind = decision.kind
        rule = ctx.rule_id or "none"
        self.metrics.observe_request(rule, kind, status, elapsed)
        if outcome.would_have is not None:
            self.metrics.shadow.labels(rule, outcome.would_have.kind).inc()
        if not self.decisions.wants(kind == "allow" and outcome.would_have is None and not reason):
            return
        entry: dict[str, Any] = {
            "ts": round(ctx.received_at, 6),
            "decision_id": ctx.decision_id,
            "rule": rule,
            "decision": kind,
            "status": status,
            "method": ctx.method,
            "path": ctx.path,
            "client_ip": ctx.client_ip,
            "principal": ctx.principal.id if ctx.principal else None,
            "latency_ms": round(elapsed * 1000, 3),
        }
        # What `tsgate policy replay` needs to decide the request again (see policies/replay.py).
        if ctx.credential:
            entry["credential"] = ctx.credential
        if ctx.principal is not None and ctx.principal.roles:
            entry["roles"] = sorted(ctx.principal.roles)
        replay_headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in ctx.headers
                          if name in self.compiled.replay_headers}
        if replay_headers:
            entry["headers"] = replay_headers
        if ctx.body is not None and self.policy.log.replay_content:
            entry["body_b64"] = base64.b64encode(ctx.body[:self.policy.log.replay_content_max_bytes]).decode()
        if not isinstance(decision, Allow):
            entry["reason"] = decision.reason
            entry["guard"] = outcome.guard
        elif reason:
            entry["reason"] = reason
        if outcome.would_have is not None:
            would = outcome.would_have
            entry["shadow"] = {"decision": would.kind, "reason": getattr(would, "reason", ""),
                               "guard": outcome.would_have_guard}
        if ctx.signals:
            entry["signals"] = [{"name": s.name, "weight": s.weight, "evidence": s.evidence} for s in ctx.signals]
        if outcome.failures:
            entry["guard_failures"] = [{"guard": f.guard, "applied": f.applied} for f in outcome.failures]
        self.decisions.write(entry)

    def record_refusal(self, scope: dict[str, Any], decision_id: str, status: int, reason: str,
                       started: float) -> None:
        client = scope.get("client")
        self.metrics.observe_request("none", "deny", status, time.perf_counter() - started)
        self.decisions.write({
            "ts": round(self.clock.now(), 3), "decision_id": decision_id, "rule": None, "decision": "deny",
            "status": status, "reason": reason, "method": scope.get("method"),
            "raw_path": (scope.get("raw_path") or b"")[:512].decode("latin-1"),
            "client_ip": client[0] if client else None,
        })

    async def ready(self) -> dict[str, bool]:
        """Readiness of each dependency, for /readyz."""
        checks: dict[str, bool] = {}
        try:
            checks["state"] = await self.store.ping()
        except Exception:  # a store that raises on ping is simply not ready
            checks["state"] = False
        checks["upstream"] = await self._upstream_reachable()
        return checks

    async def _upstream_reachable(self) -> bool:
        up = self.policy.upstream
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(up.host, up.port), up.connect_timeout)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def aclose(self) -> None:
        for task in (self._flusher, self._consumer):
            if task is not None:
                task.cancel()
        if self.review is not None:
            await self.review.aclose()  # in-flight webhook deliveries finish (or dead-letter)
        if self.followers is not None:
            try:
                await self.followers.actions.flush(self.clock.now(), force=True)
            except Exception:
                log.exception("writing pending follower cohorts at shutdown failed")
            closer = getattr(self.followers.log, "close", None)
            if closer is not None:
                await closer()
        if self.authn is not None:
            await self.authn.close()  # disposes the shared database engine too
        else:
            await self.database.dispose()
        await self.limiter.aclose()
        await self.pool.close()
        await self.store.close()
        self.decisions.close()
