"""ModerationGuard decisions for every action (and shadow), the risk band it leaves for the
assertion, body-error policy, named evasion attacks (SECURITY.md class 8), and the state-based
symbols (campaign near-duplicates, repeats, velocity) on memory:// and redis://."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.core.clock import FrozenClock
from gateway.core.context import RequestContext
from gateway.core.decisions import Allow, Challenge, Deny, Hold
from gateway.core.errors import StoreUnavailableError
from gateway.core.state import MemoryStore, StateStore
from moderation.config import (
    AccountSettings,
    ContentFields,
    KeywordBankSpec,
    NearDupSettings,
    RegexBankSpec,
    SymbolSettings,
    Thresholds,
    UrlSettings,
)
from moderation.errors import ModerationConfigError, PatternError
from moderation.guard import ModerationGuard, risk_band_of
from moderation.model import LinearModel
from tests.moderation.conftest import FakeSink, comment, make_ctx, make_settings, services

SPAM = "WINNER!! You have won a £1000 prize. Call 09061701461 now to claim your reward, T&C apply"
HAM = "Are we still on for dinner tonight? I can pick you up at 7 if that works."
CAMPAIGN = [
    "Hey friend, I made $5000 last week working from home with this simple trick, check it out",
    "hey friend i made $4800 last week working from home with this one simple trick. check it out!",
    "Hey FRIEND, I made $5200 last week working from home with this simple trick - check it out",
    "Hey friend!! I made $5000 last week working from h0me with this simple trick, check it out now",
    "hey friend, i made $6000 last week working from home with this simple trick, go check it out",
]


def guard_for(store: StateStore, clock: FrozenClock, model: LinearModel | None, sink: FakeSink | None,
              **overrides: Any) -> ModerationGuard:
    return ModerationGuard(make_settings(**overrides), services(store, clock), model=model, sink=sink)


def symbols(ctx: RequestContext) -> str:
    return next(s.evidence for s in ctx.signals if s.name == "moderation")


async def run_hooks(ctx: RequestContext, status: int = 201) -> None:
    for hook in ctx.after_response:
        await hook(status)


# -- actions ---------------------------------------------------------------------------------------


async def test_clean_comment_is_allowed_with_low_band(store: StateStore, clock: FrozenClock, model: LinearModel,
                                                      sink: FakeSink) -> None:
    """A clean comment is allowed, nothing is enqueued, and the band is low."""
    guard = guard_for(store, clock, model, sink)
    ctx = make_ctx(comment(HAM))
    assert isinstance(await guard.check(ctx), Allow)
    await run_hooks(ctx)
    assert sink.items == [] and risk_band_of(ctx) == "low"
    assert ctx.body == json.dumps(comment(HAM)).encode()  # the guard never rewrites the body


async def test_flag_forwards_and_enqueues_after_the_response(store: StateStore, clock: FrozenClock,
                                                             model: LinearModel, sink: FakeSink) -> None:
    """Score between flag and hold: allowed, band medium, and the flag is written after the response."""
    guard = guard_for(store, clock, model, sink, thresholds=Thresholds(flag=5, hold=100, block=200))
    ctx = make_ctx(comment(SPAM))
    assert isinstance(await guard.check(ctx), Allow)
    assert risk_band_of(ctx) == "medium"
    assert sink.items == []  # not before the response: flags never delay the request
    await run_hooks(ctx, 201)
    [item] = sink.items
    assert (item.action, item.state, item.upstream_status, item.decision_id) == ("flag", "open", 201, ctx.decision_id)
    assert item.content == {"fields": [{"field": "/comment/body", "text": SPAM}]}
    assert item.request is None
    assert any(s["name"] == "model.spam" for s in item.symbols)


async def test_hold_is_durable_before_the_decision(store: StateStore, clock: FrozenClock, model: LinearModel,
                                                   sink: FakeSink) -> None:
    """A hold is enqueued (with the request to forward on approval) before Hold is returned."""
    guard = guard_for(store, clock, model, sink)
    ctx = make_ctx(comment(SPAM), user="mallory")
    decision = await guard.check(ctx)
    assert isinstance(decision, Hold) and decision.reason == "moderation.held"
    [item] = sink.items
    assert item.action == "hold" and item.principal_id == "mallory" and item.rule_id == "comment"
    assert item.request is not None and json.loads(item.request["body"]["text"]) == comment(SPAM)
    assert item.score is not None and 10 <= item.score < 15
    assert risk_band_of(ctx) == "high" and ctx.after_response == []


async def test_hold_without_a_durable_queue_is_503_not_202(store: StateStore, clock: FrozenClock,
                                                           model: LinearModel) -> None:
    """When the queue cannot be written, the client gets 503 + Retry-After, never an unkept hold."""
    guard = guard_for(store, clock, model, FakeSink(fail=True))
    decision = await guard.check(make_ctx(comment(SPAM)))
    assert isinstance(decision, Deny) and decision.status == 503 and decision.reason == "moderation.unavailable"
    assert ("Retry-After", "30") in decision.headers
    assert guard.counters["queue_errors"] == 1


async def test_challenge_action(store: StateStore, clock: FrozenClock, model: LinearModel, sink: FakeSink) -> None:
    """A challenge threshold answers a Challenge at the configured level."""
    guard = guard_for(store, clock, model, sink, thresholds=Thresholds(flag=2, hold=None, challenge=5, block=None))
    decision = await guard.check(make_ctx(comment(SPAM)))
    assert isinstance(decision, Challenge) and decision.level == 2 and decision.reason == "moderation.challenge"
    assert sink.items == []


async def test_block_is_403_with_reason_and_appeal_and_is_recorded(store: StateStore, clock: FrozenClock,
                                                                   model: LinearModel, sink: FakeSink) -> None:
    """Blocked content: 403 with the reason in words, how to appeal, and a resolved record for the appeal."""
    guard = guard_for(store, clock, model, sink, urls=UrlSettings(blocked_domains=frozenset({"evil.example"})))
    ctx = make_ctx(comment("see https://www.evil.example/deal for details"))
    decision = await guard.check(ctx)
    assert isinstance(decision, Deny) and decision.status == 403 and decision.reason == "moderation.blocked"
    assert "its links" in decision.detail and "/_tsgate/appeals" in decision.detail
    assert ctx.decision_id in decision.detail
    assert "url.blocked_domain" not in decision.detail  # no rule names or weights for the client
    [item] = sink.items
    assert (item.action, item.state, item.resolution) == ("block", "resolved", "auto")


async def test_shadow_mode_allows_and_records_would_have(store: StateStore, clock: FrozenClock,
                                                         model: LinearModel, sink: FakeSink) -> None:
    """Shadow: what would have happened is in the signal; the request is allowed and nothing is enqueued."""
    guard = guard_for(store, clock, model, sink, mode="shadow")
    ctx = make_ctx(comment(SPAM))
    assert isinstance(await guard.check(ctx), Allow)
    await run_hooks(ctx)
    assert sink.items == []
    evidence = symbols(ctx)
    assert "would_have=hold" in evidence and "model.spam" in evidence
    assert risk_band_of(ctx) == "low" and ctx.signals[0].weight == 0.0


async def test_shadow_symbol_is_reported_not_counted(store: StateStore, clock: FrozenClock, model: LinearModel,
                                                     sink: FakeSink) -> None:
    """A bank in shadow mode shows up with its weight but does not change the action."""
    bank = KeywordBankSpec("trial", ("dinner",), weight=50.0, shadow=True)
    guard = guard_for(store, clock, model, sink, keyword_banks=(bank,))
    ctx = make_ctx(comment(HAM))
    assert isinstance(await guard.check(ctx), Allow)
    assert "keyword.trial:50.00(shadow)" in symbols(ctx)
    assert any(s.name == "moderation.shadow_symbols" and "would_have=block" in s.evidence for s in ctx.signals)


async def test_symbol_weight_override(store: StateStore, clock: FrozenClock, model: LinearModel,
                                      sink: FakeSink) -> None:
    """Per-symbol weights come from the settings: model.spam at 0 lets the spam SMS through."""
    guard = guard_for(store, clock, model, sink, symbols={"model.spam": SymbolSettings(0.0)})
    assert isinstance(await guard.check(make_ctx(comment(SPAM))), Allow)


def test_hold_threshold_needs_a_queue(clock: FrozenClock, model: LinearModel) -> None:
    """Configuring hold without a review queue fails at build time, not at the first held post."""
    with pytest.raises(ModerationConfigError, match="review queue"):
        guard_for(MemoryStore(clock=clock), clock, model, None)


def test_bad_regex_fails_at_build(clock: FrozenClock, model: LinearModel, sink: FakeSink) -> None:
    """A regex RE2 cannot compile fails the guard's construction (policy load), naming it."""
    with pytest.raises(PatternError, match=r"win\(\?=ner\)"):
        guard_for(MemoryStore(clock=clock), clock, model, sink,
                  regex_banks=(RegexBankSpec("bad", (r"win(?=ner)",), 3.0),))


# -- bodies ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "ctype", "status", "reason"), [
    (b'{"comment": {"body": ', "application/json", 400, "moderation.body_malformed"),
    (b"[" * 5000, "application/json", 400, "moderation.body_too_deep"),
    (b"body=hi", "multipart/form-data; boundary=x", 415, "moderation.body_unsupported"),
])
async def test_body_problems_are_4xx_when_rejecting(store: StateStore, clock: FrozenClock, model: LinearModel,
                                                    sink: FakeSink, body: bytes, ctype: str, status: int,
                                                    reason: str) -> None:
    """on_body_error=reject: malformed/unexpected bodies get a 4xx problem, never an exception."""
    guard = guard_for(store, clock, model, sink)
    decision = await guard.check(make_ctx(body, content_type=ctype))
    assert isinstance(decision, Deny) and (decision.status, decision.reason) == (status, reason)


async def test_body_problems_pass_unscored_when_configured(store: StateStore, clock: FrozenClock,
                                                           model: LinearModel, sink: FakeSink) -> None:
    """on_body_error=pass: the request goes through unscored, with an evidence signal."""
    guard = guard_for(store, clock, model, sink, on_body_error="pass")
    ctx = make_ctx(b"{broken", content_type="application/json")
    assert isinstance(await guard.check(ctx), Allow)
    assert [s.name for s in ctx.signals] == ["moderation.unscored"]
    assert risk_band_of(ctx) is None


async def test_one_megabyte_body_is_a_clear_413(store: StateStore, clock: FrozenClock, model: LinearModel,
                                                sink: FakeSink) -> None:
    """Pathological input: a 1 MB body over the content bound is a 413 problem value."""
    guard = guard_for(store, clock, model, sink)
    decision = await guard.check(make_ctx(comment("x" * 1_000_000)))
    assert isinstance(decision, Deny) and decision.status == 413


async def test_long_body_within_bounds_is_scored_in_bounded_time(store: StateStore, clock: FrozenClock,
                                                                 model: LinearModel, sink: FakeSink) -> None:
    """A large allowed body is scored head and tail: spam at the very end is still seen."""
    settings = {"content": ContentFields(("/comment/body",), max_body_bytes=2 << 20, max_text_chars=20_000)}
    guard = guard_for(store, clock, model, sink, **settings)
    text = ("Lovely weather for a walk by the river today. " * 20_000) + SPAM + " " + SPAM
    loop = asyncio.get_running_loop()
    started = loop.time()
    ctx = make_ctx(comment(text))
    decision = await guard.check(ctx)
    assert loop.time() - started < 2.0
    # Padding by repetition adds no features (they are binary), so the spam at the end decides.
    assert isinstance(decision, Hold) and "model.spam" in symbols(ctx)
    [item] = sink.items
    assert item.content["truncated"] is True and len(item.content["fields"][0]["text"]) <= 16_000


# -- named evasion attacks (SECURITY.md class 8) ---------------------------------------------------


async def test_evasion_homoglyphs(store: StateStore, clock: FrozenClock, model: LinearModel, sink: FakeSink) -> None:
    """Cyrillic look-alikes do not hide spam: the model still fires and the disguise adds text.homoglyphs."""
    guard = guard_for(store, clock, model, sink)
    disguised = SPAM.replace("e", "\u0435").replace("a", "\u0430").replace("o", "\u043e")
    ctx = make_ctx(comment(disguised))
    assert not isinstance(await guard.check(ctx), Allow)
    assert "model.spam" in symbols(ctx) and "text.homoglyphs" in symbols(ctx)


async def test_evasion_zero_width(store: StateStore, clock: FrozenClock, model: LinearModel, sink: FakeSink) -> None:
    """Zero-width characters inside words do not split keywords, and are themselves a symbol."""
    bank = KeywordBankSpec("pharma", ("viagra",), weight=6.0)
    guard = guard_for(store, clock, model, sink, keyword_banks=(bank,))
    ctx = make_ctx(comment("cheap v\u200bi\u200ba\u200bg\u200br\u200ba here"))
    await guard.check(ctx)
    assert "keyword.pharma:6.00" in symbols(ctx) and "text.invisible" in symbols(ctx)


async def test_evasion_leetspeak(store: StateStore, clock: FrozenClock, model: LinearModel, sink: FakeSink) -> None:
    """Leetspeak is folded before keyword banks: FR33 C4SH matches 'free cash'."""
    bank = KeywordBankSpec("scam", ("free cash", "claim your prize"), weight=4.0, max_hits=2)
    guard = guard_for(store, clock, model, sink, keyword_banks=(bank,))
    ctx = make_ctx(comment("FR33 C4SH!!! cl41m y0ur pr1ze today"))
    await guard.check(ctx)
    assert "keyword.scam:8.00" in symbols(ctx) and "text.leetspeak" in symbols(ctx)


@pytest.mark.parametrize("link", ["hxxp://win-big[.]xyz/now", "win-big dot xyz", "bit(.)ly/abc"])
async def test_evasion_obfuscated_urls(store: StateStore, clock: FrozenClock, model: LinearModel, sink: FakeSink,
                                       link: str) -> None:
    """Defanged links are found and scored as url.obfuscated."""
    guard = guard_for(store, clock, model, sink)
    ctx = make_ctx(comment(f"nice post, more at {link}"))
    await guard.check(ctx)
    assert "url.obfuscated" in symbols(ctx)


async def test_evasion_homoglyph_domain(store: StateStore, clock: FrozenClock, model: LinearModel,
                                        sink: FakeSink) -> None:
    """A link that only reads as an allowed domain after folding look-alikes is a phishing symbol, not allowed."""
    guard = guard_for(store, clock, model, sink, urls=UrlSettings(allowed_domains=frozenset({"paypal.com"})))
    ctx = make_ctx(comment("verify your account at https://p\u0430ypal.com/login"))
    await guard.check(ctx)
    assert "url.homoglyph_domain" in symbols(ctx)


async def test_evasion_campaign_paraphrased_across_accounts(store: StateStore, clock: FrozenClock,
                                                            model: LinearModel, sink: FakeSink) -> None:
    """One spam paraphrased by many accounts: from the 4th account on, campaign.near_duplicate fires."""
    guard = guard_for(store, clock, model, sink)
    fired = []
    for i, text in enumerate(CAMPAIGN):
        ctx = make_ctx(comment(text), user=f"bot-{i}")
        await guard.check(ctx)
        fired.append("campaign.near_duplicate" in symbols(ctx))
        clock.advance(30)
    assert fired[:3] == [False, False, False] and fired[3] and fired[4]


async def test_same_account_repeating_is_not_a_campaign(store: StateStore, clock: FrozenClock, model: LinearModel,
                                                        sink: FakeSink) -> None:
    """One account posting the same text repeatedly is account.repeat, not a cross-account campaign."""
    guard = guard_for(store, clock, model, sink)
    for _ in range(4):
        ctx = make_ctx(comment(CAMPAIGN[0]), user="spammer")
        await guard.check(ctx)
        clock.advance(30)
    assert "account.repeat" in symbols(ctx) and "campaign.near_duplicate" not in symbols(ctx)


async def test_near_duplicate_window_expires(store: StateStore, clock: FrozenClock, model: LinearModel,
                                             sink: FakeSink) -> None:
    """Copies older than the window no longer count towards a campaign."""
    guard = guard_for(store, clock, model, sink, near_duplicates=NearDupSettings(window=60, min_accounts=2))
    for i, text in enumerate(CAMPAIGN[:2]):
        await guard.check(make_ctx(comment(text), user=f"old-{i}"))
    clock.advance(120)
    ctx = make_ctx(comment(CAMPAIGN[2]), user="late")
    await guard.check(ctx)
    assert "campaign.near_duplicate" not in symbols(ctx)


async def test_short_common_texts_are_never_a_campaign(store: StateStore, clock: FrozenClock, model: LinearModel,
                                                       sink: FakeSink) -> None:
    """'Thanks, great post!' from everyone is not a campaign (too short to say)."""
    guard = guard_for(store, clock, model, sink)
    for i in range(6):
        ctx = make_ctx(comment("Thanks, great post!"), user=f"reader-{i}")
        await guard.check(ctx)
    assert "campaign.near_duplicate" not in symbols(ctx)


async def test_velocity_and_new_account(store: StateStore, clock: FrozenClock, model: LinearModel,
                                        sink: FakeSink) -> None:
    """More than velocity_max posts in the window, from an account created an hour ago."""
    guard = guard_for(store, clock, model, sink, accounts=AccountSettings(velocity_max=3))
    claims = {"created_at": clock.now() - 3600}
    for i in range(4):
        ctx = make_ctx(comment(f"{HAM} number {i} with different words {i * 7}"), user="fast", claims=claims)
        await guard.check(ctx)
        clock.advance(1)
    assert "account.velocity" in symbols(ctx) and "account.new" in symbols(ctx)


async def test_mention_and_hashtag_stuffing(store: StateStore, clock: FrozenClock, model: LinearModel,
                                            sink: FakeSink) -> None:
    """Many mentions and hashtags are their own symbols."""
    guard = guard_for(store, clock, model, sink)
    text = "look " + " ".join(f"@user{i}" for i in range(8)) + " " + " ".join(f"#tag{i}" for i in range(10))
    ctx = make_ctx(comment(text))
    await guard.check(ctx)
    assert "mention.stuffing" in symbols(ctx) and "hashtag.stuffing" in symbols(ctx)


# -- failures degrade, never raise -----------------------------------------------------------------


class DownStore(MemoryStore):
    async def window_add(self, key: str, member: str, at: float, window: float) -> int:
        raise StoreUnavailableError("redis window_add failed: timeout (test)")


async def test_store_outage_degrades_to_text_scoring(clock: FrozenClock, model: LinearModel, sink: FakeSink) -> None:
    """With the state store down, content is still scored; the outage is evidence, not an exception."""
    guard = ModerationGuard(make_settings(), services(DownStore(clock=clock), clock), model=model, sink=sink)
    ctx = make_ctx(comment(SPAM))
    assert isinstance(await guard.check(ctx), Hold)
    assert "moderation.store_unavailable" in [s["name"] for s in sink.items[0].symbols]
    assert guard.counters["store_errors"] == 1


async def test_model_hot_swap(clock: FrozenClock, model: LinearModel, sink: FakeSink) -> None:
    """use_model swaps the model for the next request; None turns the model symbol off."""
    guard = ModerationGuard(make_settings(), services(MemoryStore(clock=clock), clock), model=model, sink=sink)
    assert isinstance(await guard.check(make_ctx(comment(SPAM), user="a")), Hold)
    guard.use_model(None)
    assert isinstance(await guard.check(make_ctx(comment(SPAM), user="b")), Allow)
    guard.use_model(model)
    assert guard.model is model


async def test_anonymous_posts_are_keyed_by_ip(clock: FrozenClock, model: LinearModel, sink: FakeSink) -> None:
    """Without a principal, account signals key on the client IP (ip:...)."""
    guard = ModerationGuard(make_settings(), services(MemoryStore(clock=clock), clock), model=model, sink=sink)
    ctx = make_ctx(comment(SPAM), anonymous=True)
    await guard.check(ctx)
    assert sink.items[0].principal_id == "ip:192.0.2.10"
