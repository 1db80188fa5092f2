"""The follow guard: read an account's label and risk before a follow, record the follow after.

On a route marked ``follow`` (or ``unfollow``), for an authenticated principal:

* before forwarding — a ``fake_follower`` label (StateStore, shared by every worker) gives
  ``on_label`` (deny 403 ``followers.labelled`` / challenge ``followers.labelled``); otherwise
  the account's current risk score gives a challenge (``challenge_at``, reason
  ``followers.high_risk``) or a denial (``deny_at``, ``followers.denied``). Every decision adds a
  ``followers`` signal with the risk and its reasons. In ``mode: shadow`` the guard only signals
  (``followers.shadow_deny`` / ``followers.shadow_challenge``) and allows;
* after the response — only when the upstream answered 2xx (a refused follow is not a follow):
  the event is appended to the event log (fail-soft) and, with ``inline`` detection, fed to the
  engine; findings become labels and review items via ``FollowActions``.

Anonymous requests and requests whose target cannot be found are allowed untouched (the route's
auth and the backend decide those); a target that is not a string or integer is treated as
absent. State-store failures degrade to "no label" with a ``followers.store_unavailable`` signal
(``on_error: open``): fake-follower detection is a heuristic, it must not take follows down."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from followers.actions import FollowActions, LabelStore
from followers.config import ActionSettings, FollowRoute, parse_target
from followers.engine import FollowDetection
from followers.eventlog import EventLog
from followers.events import FollowEvent, network_prefix, ua_hash
from followers.profile import ProfileEnricher, resolve_pointer
from gateway.core.context import RequestContext
from gateway.core.decisions import ALLOW, Challenge, Decision, Deny, Signal
from gateway.core.errors import StoreError
from gateway.core.guard import OnError
from gateway.core.services import GuardServices

__all__ = ["SIGNAL_NAME", "FollowGuard"]

SIGNAL_NAME = "followers"
_MAX_TARGET = 256


class FollowGuard:
    on_error: OnError = "open"

    def __init__(self, route: FollowRoute, settings: ActionSettings, services: GuardServices, *,
                 engine: FollowDetection, log: EventLog, actions: FollowActions, labels: LabelStore,
                 profiles: ProfileEnricher | None = None, inline: bool = True, name: str = "followers") -> None:
        self.name = name
        self.route = route
        self.settings = settings
        self.services = services
        self.engine = engine
        self.log = log
        self.actions = actions
        self.labels = labels
        self.profiles = profiles
        self.inline = inline
        self._where, self._field = parse_target(route.target)
        self.needs_body = self._where == "body"
        self.counters = {"checked": 0, "recorded": 0, "not_recorded": 0, "log_errors": 0, "store_errors": 0,
                         "denied": 0, "challenged": 0, "shadow": 0, "no_target": 0}

    def target_of(self, ctx: RequestContext) -> str | None:
        if self._where == "path":
            value: Any = ctx.path_params.get(self._field)
        else:
            if not ctx.body:
                return None
            try:
                value = resolve_pointer(json.loads(ctx.body), self._field)
            except (ValueError, RecursionError):  # not JSON, or nested past the parser's limit
                return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value or len(value) > _MAX_TARGET:
            return None
        return value

    async def check(self, ctx: RequestContext) -> Decision:
        principal = ctx.principal
        if principal is None or not principal.authenticated:
            return ALLOW
        target = self.target_of(ctx)
        if target is None:
            self.counters["no_target"] += 1
            ctx.add_signal(Signal("followers.no_target", 0.0, f"{self.route.target} not found"))
            return ALLOW
        self.counters["checked"] += 1
        actor = principal.id
        s = self.settings
        labelled: dict[str, Any] | None = None
        try:
            labelled = await self.labels.get(actor)
        except StoreError as exc:
            self.counters["store_errors"] += 1
            ctx.add_signal(Signal("followers.store_unavailable", 0.0, str(exc)[:200]))
        risk = self.engine.risk.last_score(actor)
        score = risk.score if risk is not None else 0.0
        evidence = (risk.evidence() if risk is not None else "risk=unknown") + (
            f" label={s.label}:{labelled.get('source', '?')}" if labelled is not None else "")
        ctx.add_signal(Signal(SIGNAL_NAME, score, evidence))

        decision: Decision = ALLOW
        if labelled is not None and s.on_label != "none":
            decision = self._refuse(s.on_label, "followers.labelled",
                                    "This account is limited while suspected fake-follower activity is reviewed.")
        elif s.deny_at is not None and score >= s.deny_at:
            decision = self._refuse("deny", "followers.denied", "Follows from this account are refused for now.")
        elif s.challenge_at is not None and score >= s.challenge_at:
            decision = self._refuse("challenge", "followers.high_risk", "Please confirm you are a person to follow.")
        if decision is not ALLOW and s.mode == "shadow":
            self.counters["shadow"] += 1
            ctx.add_signal(Signal(f"followers.shadow_{decision.kind}", 1.0, evidence))
            decision = ALLOW
        if decision is ALLOW:
            ctx.after_response.append(self._record(ctx, actor, target))
        else:
            self.counters["denied" if decision.kind == "deny" else "challenged"] += 1
            if decision.kind == "challenge":
                self.engine.risk.note_challenge(actor)
        return decision

    def _refuse(self, how: str, reason: str, detail: str) -> Decision:
        if how == "deny":
            return Deny(403, reason, detail)
        return Challenge(reason, level=self.settings.challenge_level, detail=detail)

    def _created(self, ctx: RequestContext) -> float | None:
        claims = ctx.principal.claims if ctx.principal is not None else {}
        for name in self.settings.account_created_claims:
            value = claims.get(name)
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                return float(value)
            if isinstance(value, str):
                try:
                    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
                except ValueError:
                    continue
        return None

    def _record(self, ctx: RequestContext, actor: str, target: str) -> Callable[[int], Awaitable[None]]:
        # Capture what the hook needs now: the context may be recycled after the response.
        ua = ctx.header(b"user-agent")
        prefix = network_prefix(ctx.client_ip)
        created = self._created(ctx)

        async def record(status: int) -> None:
            if not 200 <= status < 300:
                self.counters["not_recorded"] += 1
                return
            posts: int | None = None
            actor_created = created
            if self.profiles is not None:
                profile = await self.profiles.lookup(actor)
                if profile is not None:
                    posts = profile.posts
                    actor_created = actor_created if actor_created is not None else profile.created
            state = self.engine.risk.account(actor)
            event = FollowEvent(ts=self.services.clock.now(), actor=actor, target=target, action=self.route.action,
                                prefix=prefix, ua=ua_hash(ua.decode("latin-1")) if ua else "",
                                actor_created=actor_created, actor_posts=posts,
                                challenges=state.challenges if state is not None else 0)
            self.counters["recorded"] += 1
            if not await self.log.append(event):
                self.counters["log_errors"] += 1
            if self.inline:
                observation = self.engine.observe(event)
                await self.actions.apply(observation.findings, event.ts)

        return record
