"""The content-moderation guard: extract the route's texts, normalize, score, decide.

Actions by ordered thresholds (``ModerationSettings.thresholds``):

* allow — forwarded;
* flag — forwarded, and a review item is written after the response (an ``after_response``
  hook, so the writer never delays the request; it also records the backend's status);
* hold — not forwarded: the review item (with the request, to forward on approval) is committed
  *before* ``Hold`` is returned, so the 202 is only sent for a durable hold. If the queue cannot be
  written, the client gets 503 ``moderation.unavailable`` with Retry-After instead — never a hold
  that was not kept;
* challenge — ``Challenge`` (proof of work) at ``challenge_level``;
* block — ``Deny`` 403 ``moderation.blocked`` with the reason in words and how to appeal; the
  item is written as resolved (best effort) so an appeal can find it.

In ``mode: shadow`` everything is computed and reported and the request is allowed; nothing is
enqueued. Use it when the policy rule itself is in shadow mode: the pipeline only learns of a
shadow Hold after the guard returned it, i.e. after the hold was enqueued.

What the rest of the gateway sees: exactly one ``Signal`` named ``moderation`` per scored
request in ``ctx.signals``. Its evidence is ``band=<low|medium|high> action=... score=...
symbols=...`` (the decision log prints it) and its weight is the band's contribution to
``authn.runtime.risk_band`` (low 0, medium 0.5, high 2.0 — that function's thresholds), so the
band reaches the upstream assertion's ``risk`` claim with no further wiring; ``risk_band_of(ctx)``
reads the band back. Store failures degrade to text-only scoring with an evidence-only symbol
(``moderation.store_unavailable``); body problems follow ``on_body_error``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from gateway.core.context import RequestContext
from gateway.core.decisions import ALLOW, Challenge, Decision, Deny, Hold, Signal
from gateway.core.errors import StoreError
from gateway.core.guard import OnError
from gateway.core.services import GuardServices
from gateway.core.state.base import store_key
from moderation.config import ModerationSettings
from moderation.errors import ModerationConfigError, ReviewQueueError
from moderation.extract import BodyProblem, Extracted, extract_content
from moderation.model import LinearModel
from moderation.neardup import NearDupIndex, skeleton
from moderation.normalize import Normalized, normalize
from moderation.scoring import ContentScorer, Symbol, Verdict, verdict
from moderation.sinks import UNSTORED_HEADERS, ItemAction, ItemState, NewReviewItem, ReviewSink

__all__ = ["BAND_WEIGHTS", "SIGNAL_NAME", "ModerationGuard", "risk_band_of"]

SIGNAL_NAME = "moderation"
# Chosen to land in authn.runtime.risk_band's bands (>= 0.5 medium, >= 2.0 high).
BAND_WEIGHTS = {"low": 0.0, "medium": 0.5, "high": 2.0}
_SNAPSHOT_CHARS = 16_000  # per field in a review record
_RETRY_AFTER = "30"

log = logging.getLogger("tsgate.moderation")


def risk_band_of(ctx: RequestContext) -> str | None:
    """The band the moderation guard put on this request, or None when it did not score it."""
    for signal in ctx.signals:
        if signal.name == SIGNAL_NAME and signal.evidence.startswith("band="):
            return signal.evidence[5:].split(" ", 1)[0]
    return None


class ModerationGuard:
    """One route's content moderation (Guard protocol; ``needs_body``)."""

    needs_body = True
    on_error: OnError = "open"  # a heuristic: a bug here must not take the write path down (alarmed)

    def __init__(self, settings: ModerationSettings, services: GuardServices, *, model: LinearModel | None,
                 sink: ReviewSink | None = None, name: str = "moderation") -> None:
        if sink is None and settings.mode == "enforce" and settings.thresholds.hold is not None:
            raise ModerationConfigError("moderation: a hold threshold needs a review queue (database) to hold into")
        self.name = name
        self.settings = settings
        self.services = services
        self.sink = sink
        self._scorer = ContentScorer(settings, model)  # compiles the banks: bad patterns fail here
        self._neardup = NearDupIndex(services.store, settings.near_duplicates, settings.namespace)
        self.counters: dict[str, int] = dict.fromkeys(
            ("allow", "flag", "hold", "challenge", "block", "shadow", "unscored", "body_rejected",
             "store_errors", "queue_errors"), 0)

    @property
    def model(self) -> LinearModel | None:
        return self._scorer.model

    def use_model(self, model: LinearModel | None) -> None:
        """Swap the model (hot reload). One reference assignment: requests in flight finish with
        the model they started with, new ones use the new one."""
        self._scorer.model = model

    async def check(self, ctx: RequestContext) -> Decision:
        extracted = extract_content(ctx.body, ctx.header(b"content-type"), self.settings.content)
        if isinstance(extracted, BodyProblem):
            return self._body_problem(ctx, extracted)
        if not extracted.texts:
            self.counters["unscored"] += 1
            return ALLOW
        text = "\n".join(t.text for t in extracted.texts)
        views = normalize(text)
        model = self._scorer.model  # read once: a hot swap during the awaits below is not mixed in
        symbols = self._scorer.score(views)
        symbols.extend(await self._state_symbols(ctx, views))
        if extracted.truncated:
            symbols.append(Symbol("moderation.truncated", 0.0, "long content: scored head and tail"))
        result = verdict(symbols, self.settings, model.version if model is not None else "")
        return await self._act(ctx, result, extracted)

    # -- decisions ----------------------------------------------------------------------------

    async def _act(self, ctx: RequestContext, result: Verdict, extracted: Extracted) -> Decision:
        if self.settings.mode == "shadow":
            self.counters["shadow"] += 1
            ctx.add_signal(Signal(SIGNAL_NAME, 0.0, f"band=low shadow would_have={result.action} "
                                                   f"would_have_band={result.band} {result.summary()}"))
            return ALLOW
        ctx.add_signal(Signal(SIGNAL_NAME, BAND_WEIGHTS[result.band], f"band={result.band} {result.summary()}"))
        if result.shadow_action != result.action:
            ctx.add_signal(Signal("moderation.shadow_symbols", 0.0, f"would_have={result.shadow_action} "
                                                                    f"score={result.shadow_score:.2f}"))
        action = result.action
        self.counters[action] += 1
        if action == "allow":
            return ALLOW
        if action == "flag":
            if self.sink is not None:
                ctx.after_response.append(self._enqueue_flag(ctx, result, extracted))
            return ALLOW
        if action == "hold":
            try:
                await self._enqueue(ctx, result, extracted, "hold", with_request=True)
            except ReviewQueueError as exc:
                self.counters["queue_errors"] += 1
                log.error("moderation hold not durable, answering 503: %s", exc)
                return Deny(503, "moderation.unavailable",
                            "Your post could not be queued for review; try again shortly.",
                            headers=(("Retry-After", _RETRY_AFTER),))
            return Hold("moderation.held", queue=self.settings.queue,
                        detail="Your post is waiting for review by a moderator; "
                               "quote the decision id if you ask about it.")
        if action == "challenge":
            return Challenge("moderation.challenge", level=self.settings.challenge_level,
                             detail="Please confirm you are human to post this.")
        if self.settings.record_blocks and self.sink is not None:
            try:
                await self._enqueue(ctx, result, extracted, "block", state="resolved")
            except ReviewQueueError as exc:  # the block stands; only the appeal trail is missing
                self.counters["queue_errors"] += 1
                log.error("moderation block not recorded: %s", exc)
        return Deny(403, "moderation.blocked",
                    f"This content was refused ({result.public_reason()}). If you think this is a mistake, "
                    f"appeal at {self.settings.appeal_url} quoting decision {ctx.decision_id}.")

    def _body_problem(self, ctx: RequestContext, problem: BodyProblem) -> Decision:
        if self.settings.on_body_error == "pass" or self.settings.mode == "shadow":
            self.counters["unscored"] += 1
            ctx.add_signal(Signal("moderation.unscored", 0.0, f"{problem.reason}: {problem.detail}"))
            return ALLOW
        self.counters["body_rejected"] += 1
        return Deny(problem.status, problem.reason, problem.detail)

    # -- state-based symbols ------------------------------------------------------------------

    async def _state_symbols(self, ctx: RequestContext, views: Normalized) -> list[Symbol]:
        principal = ctx.who()
        now = self.services.clock.now()
        out: list[Symbol] = []
        age = _account_age(principal.claims, self.settings.accounts.created_claims, now)
        if age is not None and age < self.settings.accounts.new_account_seconds:
            out.append(self._symbol("account.new", f"account is {age / 3600:.1f} h old"))
        skel = skeleton(views.folded)
        try:
            if self.settings.near_duplicates.enabled:
                hit = await self._neardup.observe(skel, principal.id, now)
                if hit is not None and hit.other_accounts >= self.settings.near_duplicates.min_accounts:
                    out.append(self._symbol(
                        "campaign.near_duplicate",
                        f"{hit.other_accounts} other accounts posted near-copies in the last "
                        f"{self.settings.near_duplicates.window:.0f}s ({hit.bands_matched}/"
                        f"{self.settings.near_duplicates.bands} LSH bands)"))
            out.extend(await self._account_symbols(ctx, principal.id, skel, now))
        except StoreError as exc:
            self.counters["store_errors"] += 1
            out.append(Symbol("moderation.store_unavailable", 0.0, f"state checks skipped: {type(exc).__name__}"))
        return out

    async def _account_symbols(self, ctx: RequestContext, principal: str, skel: str, now: float) -> list[Symbol]:
        accounts = self.settings.accounts
        store = self.services.store
        ns = self.settings.namespace
        out: list[Symbol] = []
        digest = hashlib.blake2b(skel.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
        repeats = await store.window_add(store_key(ns, f"acct:{principal}", "rep", digest), ctx.decision_id, now,
                                         accounts.repeat_window)
        if repeats >= accounts.repeat_min:
            out.append(self._symbol("account.repeat", f"posted {repeats} times in {accounts.repeat_window:.0f}s"))
        posts = await store.window_add(store_key(ns, f"acct:{principal}", "vel"), ctx.decision_id, now,
                                       accounts.velocity_window)
        if posts > accounts.velocity_max:
            out.append(self._symbol("account.velocity", f"{posts} posts in {accounts.velocity_window:.0f}s "
                                                        f"(more than {accounts.velocity_max})"))
        return out

    def _symbol(self, name: str, evidence: str) -> Symbol:
        config = self.settings.symbol(name)
        return Symbol(name, config.weight, evidence, config.shadow)

    # -- review records -----------------------------------------------------------------------

    def _item(self, ctx: RequestContext, result: Verdict, extracted: Extracted, action: ItemAction, *,
              with_request: bool = False, state: ItemState = "open",
              upstream_status: int | None = None) -> NewReviewItem:
        principal = ctx.who()
        content: dict[str, Any] = {"fields": [{"field": t.field, "text": t.text[:_SNAPSHOT_CHARS]}
                                              for t in extracted.texts]}
        if extracted.truncated:
            content["truncated"] = True
        request = _request_snapshot(ctx) if with_request else None
        campaign = next((s for s in result.symbols if s.name == "campaign.near_duplicate"), None)
        return NewReviewItem(
            kind="content", action=action, rule_id=ctx.rule_id or "", decision_id=ctx.decision_id,
            principal_id=principal.id, principal_kind=principal.kind, content=content,
            symbols=[s.as_dict() for s in result.symbols], score=result.score,
            priority=int(min(result.score, 1000)) + (100 if campaign is not None else 0),
            request=request, model_version=result.model_version or None, upstream_status=upstream_status,
            state=state, resolution="auto" if state == "resolved" else None,
            created_at=datetime.fromtimestamp(self.services.clock.now(), UTC))

    async def _enqueue(self, ctx: RequestContext, result: Verdict, extracted: Extracted, action: ItemAction, *,
                       with_request: bool = False, state: ItemState = "open") -> str:
        assert self.sink is not None
        return await self.sink.enqueue(self._item(ctx, result, extracted, action, with_request=with_request,
                                                  state=state))

    def _enqueue_flag(self, ctx: RequestContext, result: Verdict,
                      extracted: Extracted) -> Callable[[int], Awaitable[None]]:
        item_factory = self._item
        sink = self.sink

        async def enqueue(status: int) -> None:
            assert sink is not None
            try:
                await sink.enqueue(item_factory(ctx, result, extracted, "flag", upstream_status=status))
            except ReviewQueueError as exc:  # the post is already delivered; losing a flag is logged
                self.counters["queue_errors"] += 1
                log.error("moderation flag not recorded: %s", exc)

        return enqueue


# moderation.sinks.UNSTORED_HEADERS as the proxy's header names (bytes).
_NOT_KEPT = frozenset(name.encode("ascii") for name in UNSTORED_HEADERS)
_MAX_KEPT_HEADERS, _MAX_KEPT_HEADER_BYTES = 100, 32 * 1024


def _kept_headers(ctx: RequestContext) -> list[list[str]]:
    out: list[list[str]] = []
    size = 0
    for name, value in ctx.headers:
        if name in _NOT_KEPT or name.startswith(b"x-tsgate-"):
            continue
        size += len(name) + len(value)
        if len(out) >= _MAX_KEPT_HEADERS or size > _MAX_KEPT_HEADER_BYTES:
            break
        out.append([name.decode("latin-1"), value.decode("latin-1")])
    return out


def _request_snapshot(ctx: RequestContext) -> dict[str, Any]:
    """Enough of a held request to forward it unchanged if a moderator approves it: method, path,
    query, body and the original headers minus credentials and tsgate's own (``_NOT_KEPT``)."""
    body = ctx.body or b""
    try:
        encoded: dict[str, str] = {"text": body.decode("utf-8")}
    except UnicodeDecodeError:
        encoded = {"base64": base64.b64encode(body).decode("ascii")}
    content_type = ctx.header(b"content-type")
    return {"method": ctx.method, "path": ctx.path, "query": ctx.query.decode("latin-1"),
            "content_type": content_type.decode("latin-1") if content_type else None, "body": encoded,
            "headers": _kept_headers(ctx), "client_ip": ctx.client_ip, "scheme": ctx.scheme}


def _account_age(claims: dict[str, Any], names: tuple[str, ...], now: float) -> float | None:
    for name in names:
        value = claims.get(name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            return max(0.0, now - float(value))
        if isinstance(value, str):
            try:
                created = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            return max(0.0, now - created.timestamp())
    return None
