"""The review queue service: list and filter, claim with a lease, decide (single and per group),
the append-only audit log and stats. Backend-neutral SQLAlchemy (SQLite or PostgreSQL by URL).

Concurrency: a claim is a conditional ``UPDATE ... WHERE id = :id AND (open OR lease expired)``;
the database applies it to one row at a time, so of several moderators racing for one item exactly
one sees ``rowcount == 1``. Decisions use the same shape (``WHERE state != 'resolved'``), so a
decision is applied once and its effects run once; repeating the same decision is idempotent.

Time comes from an injected ``Clock`` (``FrozenClock`` in tests): lease expiry is tested without
sleeping. This module only records decisions; ``review.effects`` acts on them (rules decide, sinks
act)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from authn.db import Database
from gateway.core.clock import Clock, SystemClock
from moderation.records import ReviewItem
from review.errors import AlreadyDecided, DecisionNotAllowed, ItemNotFound, LeaseHeld
from review.models import AuditEntry, Decision
from review.priority import ESCALATION_BOOST

__all__ = ["Decided", "DecisionName", "ItemFilter", "ReviewService", "item_view"]

DecisionName = Literal["approve", "remove", "ban_account", "false_positive", "escalate"]
# The training label a decision teaches (``tsgate moderation export-labels`` reads spam/ham).
LABELS: dict[str, str] = {"approve": "ham", "false_positive": "ham", "remove": "spam", "ban_account": "spam"}
CONFIRMING = ("remove", "ban_account")
FINAL = ("approve", "remove", "ban_account", "false_positive")
MAX_AGE_SECONDS = 100 * 365.25 * 86400


@dataclass(frozen=True, slots=True)
class ItemFilter:
    kind: str | None = None
    rule: str | None = None
    state: Literal["open", "claimed", "resolved"] | None = None
    group: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    older_than: float | None = None  # seconds
    newer_than: float | None = None
    principal: str | None = None


@dataclass(frozen=True, slots=True)
class Decided:
    """A recorded decision and the item as it was decided. ``replayed``: the same decision was
    already recorded (idempotent repeat): nothing new happened and nothing must act again."""

    decision_id: str
    decision: DecisionName
    moderator: str
    item: dict[str, Any]
    replayed: bool = False
    effects: dict[str, Any] = field(default_factory=dict)


def item_view(row: ReviewItem, now: datetime | None = None) -> dict[str, Any]:
    """The JSON view of an item; a claimed item whose lease ran out reads as open."""
    state = row.state
    if state == "claimed" and now is not None and row.lease_expires_at is not None and row.lease_expires_at <= now:
        state = "open"
    return {
        "id": row.id, "kind": row.kind, "group_id": row.group_id, "state": state,
        "lease_owner": row.lease_owner if state == "claimed" else None,
        "lease_expires_at": row.lease_expires_at.isoformat() if state == "claimed" and row.lease_expires_at else None,
        "priority": row.priority, "score": row.score, "rule_id": row.rule_id, "decision_id": row.decision_id,
        "principal_id": row.principal_id, "principal_kind": row.principal_kind, "action": row.action,
        "shadow": bool(row.shadow), "content": row.content, "symbols": row.symbols,
        "has_request": row.request is not None, "model_version": row.model_version,
        "upstream_status": row.upstream_status, "resolution": row.resolution, "resolved_by": row.resolved_by,
        "note": row.note, "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
    }


def _snapshot(row: ReviewItem) -> dict[str, Any]:
    return {"state": row.state, "lease_owner": row.lease_owner, "resolution": row.resolution,
            "resolved_by": row.resolved_by, "priority": row.priority}


def _age(seconds: float | None) -> timedelta | None:
    """A filter age as a timedelta: NaN is no filter, and ages are clamped to a century (no overflow)."""
    if seconds is None or math.isnan(seconds):
        return None
    return timedelta(seconds=min(max(seconds, 0.0), MAX_AGE_SECONDS))


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class ReviewService:
    def __init__(self, database: Database, *, clock: Clock | None = None, lease_seconds: float = 600.0) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.database = database
        self.clock = clock or SystemClock()
        self.lease = timedelta(seconds=lease_seconds)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), UTC)

    # -- reading --------------------------------------------------------------------------------

    def _where(self, f: ItemFilter, now: datetime) -> list[Any]:
        expired = and_(ReviewItem.state == "claimed", ReviewItem.lease_expires_at <= now)
        out: list[Any] = []
        if f.kind:
            out.append(ReviewItem.kind == f.kind)
        if f.rule:
            out.append(ReviewItem.rule_id == f.rule)
        if f.group:
            out.append(ReviewItem.group_id == f.group)
        if f.principal:
            out.append(ReviewItem.principal_id == f.principal)
        if f.state == "open":
            out.append(or_(ReviewItem.state == "open", expired))
        elif f.state == "claimed":
            out.append(and_(ReviewItem.state == "claimed", ReviewItem.lease_expires_at > now))
        elif f.state == "resolved":
            out.append(ReviewItem.state == "resolved")
        if f.min_score is not None and math.isfinite(f.min_score):
            out.append(ReviewItem.score >= f.min_score)
        if f.max_score is not None and math.isfinite(f.max_score):
            out.append(ReviewItem.score <= f.max_score)
        if (older := _age(f.older_than)) is not None:
            out.append(ReviewItem.created_at <= now - older)
        if (newer := _age(f.newer_than)) is not None:
            out.append(ReviewItem.created_at >= now - newer)
        return out

    async def list_items(self, f: ItemFilter = ItemFilter(), *, limit: int = 50,
                   offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """One page (highest priority first, then oldest) and the total matching."""
        now = self.now()
        where = self._where(f, now)
        async with self.database.transaction() as session:
            total = (await session.execute(select(func.count()).select_from(ReviewItem).where(*where))).scalar_one()
            rows = (await session.execute(
                select(ReviewItem).where(*where)
                .order_by(ReviewItem.priority.desc(), ReviewItem.created_at, ReviewItem.id)
                .limit(limit).offset(offset))).scalars().all()
        return [item_view(r, now) for r in rows], int(total)

    async def get(self, item_id: str) -> dict[str, Any]:
        async with self.database.transaction() as session:
            row = await session.get(ReviewItem, item_id)
            if row is None:
                raise ItemNotFound(f"No review item {item_id!r}.")
            decisions = (await session.execute(
                select(Decision).where(Decision.item_id == item_id).order_by(Decision.created_at))).scalars().all()
        view = item_view(row, self.now())
        view["request"] = row.request
        view["decisions"] = [{"id": d.id, "decision": d.decision, "moderator": d.moderator, "note": d.note,
                              "effects": d.effects, "created_at": d.created_at.isoformat()} for d in decisions]
        return view

    async def get_row(self, item_id: str) -> ReviewItem:
        async with self.database.transaction() as session:
            row = await session.get(ReviewItem, item_id)
        if row is None:
            raise ItemNotFound(f"No review item {item_id!r}.")
        return row

    async def by_decision_id(self, decision_id: str) -> ReviewItem | None:
        """The non-appeal item the gateway wrote for ``decision_id`` (what a user appeals)."""
        async with self.database.transaction() as session:
            return (await session.execute(select(ReviewItem).where(
                ReviewItem.decision_id == decision_id, ReviewItem.kind != "appeal"))).scalars().first()

    # -- leases ---------------------------------------------------------------------------------

    async def claim_next(self, moderator: str, f: ItemFilter = ItemFilter(), *,
                         candidates: int = 8) -> dict[str, Any] | None:
        """Lease the most urgent open item (or one whose lease ran out) to ``moderator``. Never hands
        one item to two moderators: each candidate is taken with a conditional UPDATE."""
        while True:
            now = self.now()
            where = self._where(replace(f, state="open"), now)
            async with self.database.transaction() as session:
                ids = (await session.execute(
                    select(ReviewItem.id).where(*where)
                    .order_by(ReviewItem.priority.desc(), ReviewItem.created_at, ReviewItem.id)
                    .limit(candidates))).scalars().all()
            if not ids:
                return None
            for item_id in ids:
                won = await self._take(item_id, moderator, now)
                if won is not None:
                    return won
            # every candidate was taken by someone else meanwhile: look again

    async def claim(self, item_id: str, moderator: str) -> dict[str, Any]:
        """Lease one item (or extend one's own lease)."""
        won = await self._take(item_id, moderator, self.now())
        if won is not None:
            return won
        row = await self.get_row(item_id)
        if row.state == "resolved":
            raise AlreadyDecided(f"Item {item_id} is already resolved ({row.resolution}).")
        raise LeaseHeld(f"Item {item_id} is claimed by {row.lease_owner} until {row.lease_expires_at}.")

    async def _take(self, item_id: str, moderator: str, now: datetime) -> dict[str, Any] | None:
        takeable = or_(ReviewItem.state == "open",
                       and_(ReviewItem.state == "claimed",
                            or_(ReviewItem.lease_expires_at <= now, ReviewItem.lease_owner == moderator)))
        async with self.database.transaction() as session:
            before = await session.get(ReviewItem, item_id)
            if before is None:
                raise ItemNotFound(f"No review item {item_id!r}.")
            snapshot = _snapshot(before)
            result = await session.execute(
                update(ReviewItem).where(ReviewItem.id == item_id, takeable)
                .values(state="claimed", lease_owner=moderator[:128], lease_expires_at=now + self.lease,
                        updated_at=now)
                .execution_options(synchronize_session=False))
            if _rowcount(result) != 1:
                return None
            await session.refresh(before)
            self._audit(session, moderator, "claim", item_id, snapshot, _snapshot(before), now)
            return item_view(before, now)

    async def release(self, item_id: str, moderator: str) -> dict[str, Any]:
        now = self.now()
        async with self.database.transaction() as session:
            row = await session.get(ReviewItem, item_id)
            if row is None:
                raise ItemNotFound(f"No review item {item_id!r}.")
            snapshot = _snapshot(row)
            result = await session.execute(
                update(ReviewItem).where(ReviewItem.id == item_id, ReviewItem.state == "claimed",
                                         ReviewItem.lease_owner == moderator)
                .values(state="open", lease_owner=None, lease_expires_at=None, updated_at=now)
                .execution_options(synchronize_session=False))
            if _rowcount(result) != 1:
                raise LeaseHeld(f"Item {item_id} is not claimed by {moderator}.")
            await session.refresh(row)
            self._audit(session, moderator, "release", item_id, snapshot, _snapshot(row), now)
            return item_view(row, now)

    async def release_expired(self) -> int:
        """Put every item whose lease ran out back to open (reads already treat them as open)."""
        now = self.now()
        async with self.database.transaction() as session:
            result = await session.execute(
                update(ReviewItem).where(ReviewItem.state == "claimed", ReviewItem.lease_expires_at <= now)
                .values(state="open", lease_owner=None, lease_expires_at=None, updated_at=now)
                .execution_options(synchronize_session=False))
            count = _rowcount(result)
            if count:
                self._audit(session, "tsgate", "leases_expired", None, None, {"count": count}, now)
            return count

    # -- decisions ------------------------------------------------------------------------------

    async def decide(self, item_id: str, decision: DecisionName, moderator: str, note: str | None = None,
                     effects: dict[str, Any] | None = None) -> Decided:
        """Record ``decision``. Allowed on an open item, one whose lease ran out, or one leased to
        ``moderator``. The same final decision again returns the first (``replayed=True``)."""
        if decision not in (*FINAL, "escalate"):
            raise DecisionNotAllowed(f"Unknown decision {decision!r}.")
        now = self.now()
        decidable = and_(ReviewItem.state != "resolved",
                         or_(ReviewItem.state == "open", ReviewItem.lease_owner == moderator,
                             ReviewItem.lease_expires_at <= now))
        if decision == "escalate":
            # Escalated items come before every other (once: escalating again keeps the boost).
            boosted = case((ReviewItem.priority >= ESCALATION_BOOST, ReviewItem.priority),
                           else_=ReviewItem.priority + ESCALATION_BOOST)
            values: dict[str, Any] = {"state": "open", "lease_owner": None, "lease_expires_at": None,
                                      "priority": boosted, "updated_at": now}
        else:
            values = {"state": "resolved", "lease_owner": None, "lease_expires_at": None,
                      "resolution": LABELS[decision], "resolved_by": moderator[:128], "updated_at": now}
        if note:
            values["note"] = note[:4000]
        async with self.database.transaction() as session:
            row = await session.get(ReviewItem, item_id)
            if row is None:
                raise ItemNotFound(f"No review item {item_id!r}.")
            snapshot = _snapshot(row)
            result = await session.execute(
                update(ReviewItem).where(ReviewItem.id == item_id, decidable).values(**values)
                .execution_options(synchronize_session=False))
            if _rowcount(result) == 1:
                await session.refresh(row)
                decision_id = uuid.uuid4().hex
                session.add(Decision(id=decision_id, item_id=item_id, decision=decision, moderator=moderator[:128],
                                     note=note[:4000] if note else None, effects=dict(effects or {}),
                                     created_at=now))
                after = {**_snapshot(row), "decision": decision, "decision_id": decision_id}
                self._audit(session, moderator, f"decide:{decision}", item_id, snapshot, after, now)
                return Decided(decision_id, decision, moderator, item_view(row, now))
        # Lost: already resolved, or leased to someone else.
        return await self._lost(item_id, decision, moderator)

    async def _lost(self, item_id: str, decision: DecisionName, moderator: str) -> Decided:
        async with self.database.transaction() as session:
            row = await session.get(ReviewItem, item_id)
            assert row is not None
            last = (await session.execute(
                select(Decision).where(Decision.item_id == item_id).order_by(Decision.created_at.desc())
                .limit(1))).scalars().first()
        now = self.now()
        if row.state == "resolved":
            if last is not None and last.decision == decision:
                return Decided(last.id, decision, last.moderator, item_view(row, now), replayed=True,
                               effects=last.effects)
            raise AlreadyDecided(f"Item {item_id} was already decided: {last.decision if last else row.resolution}.")
        raise LeaseHeld(f"Item {item_id} is claimed by {row.lease_owner}.")

    async def decide_group(self, group_id: str, decision: DecisionName, moderator: str,
                           note: str | None = None) -> list[Decided]:
        """The same decision for every unresolved item of a grouped job (a cohort or campaign)."""
        async with self.database.transaction() as session:
            ids = (await session.execute(
                select(ReviewItem.id).where(ReviewItem.group_id == group_id, ReviewItem.state != "resolved")
                .order_by(ReviewItem.created_at))).scalars().all()
        if not ids:
            raise DecisionNotAllowed(f"Group {group_id!r} has no unresolved items.")
        out = []
        for item_id in ids:
            try:
                out.append(await self.decide(item_id, decision, moderator, note))
            except LeaseHeld:
                continue  # someone else is on it; they decide it
        return out

    async def record_effects(self, decided: Decided, effects: dict[str, Any]) -> None:
        """Store what acting on a decision did, and audit it."""
        now = self.now()
        async with self.database.transaction() as session:
            await session.execute(update(Decision).where(Decision.id == decided.decision_id)
                                  .values(effects=effects).execution_options(synchronize_session=False))
            self._audit(session, decided.moderator, f"effects:{decided.decision}", str(decided.item["id"]),
                        None, effects, now)

    # -- audit and stats ------------------------------------------------------------------------

    def _audit(self, session: AsyncSession, actor: str, action: str, item_id: str | None,
               before: dict[str, Any] | None, after: dict[str, Any] | None, now: datetime) -> None:
        session.add(AuditEntry(at=now, actor=actor[:128], action=action[:32], item_id=item_id, before=before,
                               after=after))

    async def audit(self, action: str, actor: str, item_id: str | None = None,
                    after: dict[str, Any] | None = None) -> None:
        async with self.database.transaction() as session:
            self._audit(session, actor, action, item_id, None, after, self.now())

    async def audit_log(self, *, item_id: str | None = None, actor: str | None = None, limit: int = 100,
                        offset: int = 0) -> list[dict[str, Any]]:
        where = []
        if item_id:
            where.append(AuditEntry.item_id == item_id)
        if actor:
            where.append(AuditEntry.actor == actor)
        async with self.database.transaction() as session:
            rows = (await session.execute(select(AuditEntry).where(*where).order_by(AuditEntry.id.desc())
                                          .limit(limit).offset(offset))).scalars().all()
        return [{"id": r.id, "at": r.at.isoformat(), "actor": r.actor, "action": r.action, "item_id": r.item_id,
                 "before": r.before, "after": r.after} for r in rows]

    async def stats(self) -> dict[str, Any]:
        """Backlog per kind and state, ages of unresolved items, decisions per moderator, and each
        rule's precision as measured by decisions: confirmed (remove, ban) / finally decided."""
        now = self.now()
        async with self.database.transaction() as session:
            backlog_rows = (await session.execute(
                select(ReviewItem.kind, func.count(), func.min(ReviewItem.created_at))
                .where(ReviewItem.state != "resolved").group_by(ReviewItem.kind))).all()
            claimed = (await session.execute(select(func.count()).select_from(ReviewItem).where(
                ReviewItem.state == "claimed", ReviewItem.lease_expires_at > now))).scalar_one()
            per_mod = (await session.execute(
                select(Decision.moderator, Decision.decision, func.count())
                .group_by(Decision.moderator, Decision.decision))).all()
            per_rule = (await session.execute(
                select(ReviewItem.rule_id, Decision.decision, func.count())
                .join(Decision, Decision.item_id == ReviewItem.id)
                .where(Decision.decision.in_(FINAL)).group_by(ReviewItem.rule_id, Decision.decision))).all()
        backlog: dict[str, Any] = {}
        oldest: datetime | None = None
        for kind, count, first in backlog_rows:
            first = first if first.tzinfo else first.replace(tzinfo=UTC)
            backlog[str(kind)] = {"count": int(count), "oldest_age_seconds": (now - first).total_seconds()}
            oldest = first if oldest is None or first < oldest else oldest
        moderators: dict[str, dict[str, int]] = {}
        for mod, decision, count in per_mod:
            moderators.setdefault(str(mod), {})[str(decision)] = int(count)
        rules: dict[str, dict[str, Any]] = {}
        for rule, decision, count in per_rule:
            entry = rules.setdefault(str(rule), {"decided": 0, "confirmed": 0})
            entry["decided"] += int(count)
            if decision in CONFIRMING:
                entry["confirmed"] += int(count)
        for entry in rules.values():
            entry["precision"] = round(entry["confirmed"] / entry["decided"], 4) if entry["decided"] else None
        return {"backlog": {"total": sum(v["count"] for v in backlog.values()), "claimed": int(claimed),
                            "by_kind": backlog,
                            "oldest_age_seconds": (now - oldest).total_seconds() if oldest else None},
                "decisions_per_moderator": moderators, "rules": rules}


def decisions_of(items: Sequence[Decided]) -> list[dict[str, Any]]:
    return [{"decision_id": d.decision_id, "decision": d.decision, "item_id": d.item["id"], "replayed": d.replayed}
            for d in items]
