"""The follow guard: labels and risk before the follow, recording only after a 2xx."""

from __future__ import annotations

import json
from typing import Any

import pytest

from followers.actions import FollowActions, FollowReview, LabelStore, label_key
from followers.config import ActionSettings, FollowRoute
from followers.engine import FollowDetection
from followers.eventlog import MemoryEventLog
from followers.guard import FollowGuard
from gateway.core.clock import FrozenClock
from gateway.core.decisions import Allow, Challenge, Deny
from gateway.core.errors import StoreUnavailableError
from gateway.core.services import GuardServices
from gateway.core.state.memory import MemoryStore
from tests.followers.conftest import make_ctx


class FakeSink:
    def __init__(self) -> None:
        self.items: list[FollowReview] = []

    async def submit(self, review: FollowReview) -> str:
        self.items.append(review)
        return review.review_id


def build(settings: ActionSettings | None = None, route: FollowRoute | None = None,
          store: Any = None) -> tuple[FollowGuard, FrozenClock, MemoryEventLog, FakeSink]:
    clock = FrozenClock()
    store = store or MemoryStore("memory://", clock=clock)
    settings = settings or ActionSettings()
    engine = FollowDetection()
    labels = LabelStore(store, settings.label)
    sink = FakeSink()
    actions = FollowActions(labels, sink, label_ttl_s=3600, shadow=settings.mode == "shadow")
    log = MemoryEventLog(1000)
    guard = FollowGuard(route or FollowRoute(), settings, GuardServices(store, clock), engine=engine, log=log,
                        actions=actions, labels=labels)
    return guard, clock, log, sink


@pytest.mark.parametrize("status, recorded", [(200, True), (201, True), (204, True), (302, False), (404, False),
                                              (429, False), (500, False), (502, False)])
async def test_follow_is_recorded_only_when_upstream_answers_2xx(status: int, recorded: bool) -> None:
    """The after-response hook writes the event (and feeds the detectors) only on 2xx."""
    guard, _, log, _ = build()
    ctx = make_ctx()
    assert isinstance(await guard.check(ctx), Allow)
    assert len(ctx.after_response) == 1
    await ctx.after_response[0](status)
    assert len(log) == (1 if recorded else 0)
    assert (guard.engine.events == 1) is recorded
    if recorded:
        event = (await log.read())[0][1]
        assert (event.actor, event.target, event.prefix) == ("alice", "bob", "203.0.113.0/24")


async def test_labelled_account_is_denied_and_label_expires() -> None:
    """A fake_follower label denies follows (403 followers.labelled) until its TTL passes."""
    guard, clock, _, _ = build()
    await guard.labels.put("alice", 60, {"source": "cohort:c1"})
    decision = await guard.check(make_ctx())
    assert isinstance(decision, Deny) and decision.status == 403 and decision.reason == "followers.labelled"
    clock.advance(61)
    assert isinstance(await guard.check(make_ctx()), Allow)


async def test_label_is_readable_by_other_guards_under_a_documented_key() -> None:
    """Labels live in the StateStore under label_key(actor, label), with a JSON reason."""
    guard, _, _, _ = build()
    await guard.labels.put("mallory", 60, {"source": "burst:bob"})
    raw = await guard.services.store.get(label_key("mallory"))
    assert raw is not None and json.loads(raw)["source"] == "burst:bob"
    assert label_key("mallory") == "followers:{mallory}:label:fake_follower"


async def test_shadow_mode_only_signals() -> None:
    """In shadow mode a labelled account is allowed, with a followers.shadow_deny signal, and the
    follow is still recorded."""
    guard, _, _, _ = build(ActionSettings(mode="shadow"))
    await guard.labels.put("alice", 60, {"source": "x"})
    ctx = make_ctx()
    assert isinstance(await guard.check(ctx), Allow)
    assert "followers.shadow_deny" in {s.name for s in ctx.signals}
    assert len(ctx.after_response) == 1


async def test_high_risk_account_is_challenged() -> None:
    """An account whose current risk is above challenge_at gets a challenge (level from config)."""
    guard, _, _, _ = build(ActionSettings(challenge_at=1.0, challenge_level=3))
    event_ctx = make_ctx(claims={"created_at": guard.services.clock.now() - 60})
    await guard.check(event_ctx)
    await event_ctx.after_response[0](200)  # the engine now knows a minutes-old account
    decision = await guard.check(make_ctx())
    assert isinstance(decision, Challenge) and decision.level == 3 and decision.reason == "followers.high_risk"
    assert guard.engine.risk.account("alice").challenges == 1  # type: ignore[union-attr]


async def test_target_from_json_body_pointer() -> None:
    """A body:/pointer route reads the target from the JSON body; junk bodies mean no target."""
    guard, _, log, _ = build(route=FollowRoute(target="body:/follow/user"))
    assert guard.needs_body
    ctx = make_ctx(path_params={}, body=b'{"follow": {"user": 42}}')
    await guard.check(ctx)
    await ctx.after_response[0](200)
    assert (await log.read())[0][1].target == "42"
    for body in (b"not json", b'{"follow": {"user": true}}', b"[" * 100_000, None):
        ctx = make_ctx(path_params={}, body=body)
        assert isinstance(await guard.check(ctx), Allow) and ctx.after_response == []


async def test_anonymous_follow_is_left_alone() -> None:
    """No principal: nothing to label or record (the route's auth decides)."""
    guard, _, _, _ = build()
    ctx = make_ctx(actor=None)
    assert isinstance(await guard.check(ctx), Allow) and ctx.after_response == []


class BrokenStore(MemoryStore):
    async def get(self, key: str) -> bytes | None:
        raise StoreUnavailableError("redis down")


async def test_store_failure_fails_open_with_a_signal() -> None:
    """A StateStore failure allows the follow with followers.store_unavailable (a heuristic must
    not take follows down)."""
    guard, _, _, _ = build(store=BrokenStore("memory://"))
    ctx = make_ctx()
    assert isinstance(await guard.check(ctx), Allow)
    assert "followers.store_unavailable" in {s.name for s in ctx.signals}


async def test_scripted_burst_through_the_guard_labels_and_files_one_target_item() -> None:
    """A burst of 60 brand-new accounts from one proxy subnet following one account through the
    guard: the target is flagged (one review item with the fake share) and the accounts get labels
    that then deny their next follow."""
    guard, clock, _, sink = build()
    for i in range(300):  # ordinary traffic so the detectors have a population to compare with
        ctx = make_ctx(actor=f"old{i}", path_params={"username": f"pop{i % 30}"}, ip=f"198.51.{i % 200}.{i % 7}",
                       claims={"created_at": clock.now() - 400 * 86400})
        await guard.check(ctx)
        await ctx.after_response[0](200)
        clock.advance(30)
    for i in range(60):
        ctx = make_ctx(actor=f"bot{i}", path_params={"username": "victim"}, ip=f"192.0.2.{i}",
                       ua=b"okhttp/3.12", claims={"created_at": clock.now() - 3600})
        await guard.check(ctx)
        await ctx.after_response[0](200)
        clock.advance(2)
    targets = [r for r in sink.items if r.kind == "target"]
    assert [r.subject for r in targets] == ["victim"]
    assert dict(targets[0].details)["fake_share"] > 0.8
    assert guard.actions.counters["labels"] >= 50
    decision = await guard.check(make_ctx(actor="bot59", path_params={"username": "someone"}))
    assert isinstance(decision, Deny)
