"""`tsgate review stats` and `tsgate review export-account-labels`: a banned cohort labels every
account bad, a false positive labels its poster good, anonymous posters and removals label nobody."""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from authn.db import Database
from gateway.cli import main
from gateway.core.clock import FrozenClock
from moderation.records import ReviewQueue
from review import ReviewService
from tests.review.conftest import new_item

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()


async def test_account_labels_and_stats_from_decisions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Cohort ban → each account bad; false positive → poster good; remove and anonymous → no row."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'labels.db'}"
    database = Database(url)
    await database.migrate()
    service, queue = ReviewService(database, clock=FrozenClock(T0)), ReviewQueue(database)
    cohort = await queue.enqueue(new_item("c-1", kind="follow", action="flag", rule_id="followers",
                                          principal_id="cohort:1", principal_kind="cohort", group_id="cohort:1",
                                          content={"accounts": ["bot1", "bot2"]}, request=None))
    await service.decide_group("cohort:1", "ban_account", "mod-a")
    fp = await queue.enqueue(new_item("p-1", principal_id="ext:backend:carol", principal_kind="external"))
    await service.decide(fp, "false_positive", "mod-b")
    removed = await queue.enqueue(new_item("p-2", principal_id="dave", principal_kind="user"))
    await service.decide(removed, "remove", "mod-b")
    anonymous = await queue.enqueue(new_item("p-3", principal_id="ip:192.0.2.1", principal_kind="anonymous"))
    await service.decide(anonymous, "ban_account", "mod-b")
    await database.dispose()

    out = tmp_path / "accounts.csv"
    argv = ["review", "export-account-labels", "--database", url, "--out", str(out)]
    assert await asyncio.to_thread(main, argv) == 0
    with open(out, encoding="utf-8", newline="") as handle:
        rows = sorted((r["account"], r["label"], r["item_id"]) for r in csv.DictReader(handle))
    assert rows == [("bot1", "bad", cohort), ("bot2", "bad", cohort), ("ext:backend:carol", "good", fp)]
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["review", "stats", "--database", url]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["rules"]["followers"]["precision"] == 1.0 and stats["rules"]["comments"]["decided"] == 3
