"""``tsgate review``: the queue's numbers and moderators' account labels, for operators and for
training.

* ``stats --database URL``: backlog, ages, decisions per moderator, per-rule precision (JSON).
* ``export-account-labels --database URL --out CSV``: one row per account a moderator judged —
  ``bad`` after ``ban_account`` (every account of a cohort), ``good`` after ``false_positive`` or
  ``approve`` — for the account-risk side (content labels come from ``tsgate moderation
  export-labels``)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from typing import Any

from sqlalchemy import select

from authn.db import Database
from gateway.core.errors import StoreError
from moderation.records import ReviewItem
from review.models import Decision
from review.queue import ReviewService

__all__ = ["account_labels", "register", "run"]

ACCOUNT_LABELS = {"ban_account": "bad", "false_positive": "good", "approve": "good"}


def register(sub: Any) -> None:
    parser = sub.add_parser("review", help="review queue: stats, account labels")
    rsub = parser.add_subparsers(dest="review_command", required=True)
    stats = rsub.add_parser("stats", help="print queue stats as JSON")
    stats.add_argument("--database", required=True, help="database URL (as in the policy's database:)")
    export = rsub.add_parser("export-account-labels", help="write moderators' account judgements as CSV")
    export.add_argument("--database", required=True, help="database URL (as in the policy's database:)")
    export.add_argument("--out", required=True)


async def account_labels(database: Database) -> list[tuple[str, str, str, str, str, str, str]]:
    """(account, label, item kind, rule, item id, decision, moderator) for every judged account."""
    async with database.transaction() as session:
        result = await session.execute(
            select(ReviewItem, Decision).join(Decision, Decision.item_id == ReviewItem.id)
            .where(Decision.decision.in_(tuple(ACCOUNT_LABELS))).order_by(Decision.created_at))
        rows = []
        for item, decision in result.all():
            if item.kind == "follow" and item.principal_kind == "cohort":
                accounts = [str(a) for a in (item.content or {}).get("accounts", [])]
            elif item.principal_kind in ("user", "external"):
                accounts = [item.principal_id]
            else:
                continue  # anonymous (an address) or a follow target: not an account judgement
            rows += [(account, ACCOUNT_LABELS[decision.decision], item.kind, item.rule_id, item.id,
                      decision.decision, decision.moderator) for account in accounts]
        return rows


def run(args: argparse.Namespace) -> int:
    async def query() -> dict[str, Any] | list[tuple[str, str, str, str, str, str, str]]:
        database = Database(args.database)
        try:
            if args.review_command == "stats":
                return await ReviewService(database).stats()
            return await account_labels(database)
        finally:
            await database.dispose()

    try:
        result = asyncio.run(query())
    except StoreError as exc:
        print(f"tsgate review: {exc}", file=sys.stderr)
        return 1
    if isinstance(result, dict):
        print(json.dumps(result, indent=2))
        return 0
    with open(args.out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["account", "label", "kind", "rule", "item_id", "decision", "moderator"])
        writer.writerows(result)
    print(f"wrote {len(result)} account labels to {args.out}")
    return 0
