"""``tsgate moderation ...``: the content model's lifecycle.

* ``fetch-data``: download and cache the SMS spam CSV (see ``moderation.data``);
* ``train --data CSV [--data CSV ...] --out MODEL``: fit, calibrate, write a versioned model;
* ``eval --data CSV [--model MODEL] [--json]``: score a model on a file, or without ``--model``
  cross-validate training on it (folds grouped by normalized text);
* ``export-labels --database URL --out CSV``: moderators' resolved items as training rows, to
  retrain with ``train --data sms.csv --data labels.csv``.

Errors are one line on stderr and exit status 1 (2 for usage), never a traceback."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from moderation.errors import ModerationError

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add ``moderation`` and its subcommands to the ``tsgate`` argument parser."""
    moderation = subparsers.add_parser("moderation", help="content model: fetch data, train, evaluate")
    sub = moderation.add_subparsers(dest="moderation_command", required=True)

    fetch = sub.add_parser("fetch-data", help="download and cache the SMS spam CSV (text,label)")
    fetch.add_argument("--force", action="store_true", help="download again even if cached")

    train = sub.add_parser("train", help="train a model and write it")
    train.add_argument("--data", action="append", required=True, help="CSV with a header; repeatable")
    train.add_argument("--out", required=True, help="model file to write (.npz)")
    _columns(train)
    train.add_argument("--c", type=float, default=None, help="inverse L2 regularization (default 30)")

    evaluate = sub.add_parser("eval", help="evaluate a model, or cross-validate without --model")
    evaluate.add_argument("--data", required=True, help="CSV with a header")
    evaluate.add_argument("--model", default=None, help="model file; without it: grouped cross-validation")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--folds", type=int, default=5)
    _columns(evaluate)

    export = sub.add_parser("export-labels", help="write moderators' spam/ham resolutions as a training CSV")
    export.add_argument("--database", required=True, help="database URL (as in the policy's database:)")
    export.add_argument("--out", required=True)


def _columns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-col", default="text", help="text column (default text)")
    parser.add_argument("--label-col", default="label", help="label column: spam/ham or 1/0 (default label)")


def run(args: argparse.Namespace) -> int:
    try:
        command = args.moderation_command
        if command == "fetch-data":
            return _fetch(args)
        if command == "train":
            return _train(args)
        if command == "eval":
            return _eval(args)
        return _export(args)
    except ModerationError as exc:
        print(f"tsgate moderation: {exc}", file=sys.stderr)
        return 1


def _fetch(args: argparse.Namespace) -> int:
    from moderation.data import fetch_sms

    path = fetch_sms(force=args.force)
    print(path)
    return 0


def _read(paths: list[str], text_col: str, label_col: str) -> tuple[list[str], list[int]]:
    from moderation.train import read_labeled_csv

    texts: list[str] = []
    labels: list[int] = []
    for path in paths:
        t, y = read_labeled_csv(path, text_col, label_col)
        texts.extend(t)
        labels.extend(y)
    return texts, labels


def _train(args: argparse.Namespace) -> int:
    from moderation.train import TrainSettings, train

    texts, labels = _read(args.data, args.text_col, args.label_col)
    _need_both_classes(labels)
    settings = TrainSettings() if args.c is None else TrainSettings(c=args.c)
    model, cv = train(texts, labels, settings, source=",".join(Path(p).name for p in args.data))
    try:
        version = model.save(args.out)
    except OSError as exc:
        raise ModerationError(f"{args.out}: cannot write ({exc.strerror or exc})") from exc
    print(f"wrote {args.out} ({version}); trained on {len(texts)} texts ({sum(labels)} spam)")
    print(_table(cv.as_json() | {"recall_at_fpr_0.002": cv.recall_at_fpr_0_002}, "out-of-fold (grouped CV)"))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from moderation.model import load_model
    from moderation.train import TrainSettings, cross_validate, evaluate

    texts, labels = _read([args.data], args.text_col, args.label_col)
    _need_both_classes(labels)
    if args.model:
        metrics = evaluate(load_model(args.model), texts, labels)
        title = f"model {args.model}"
    else:
        if args.folds < 2:
            raise ModerationError("--folds must be at least 2")
        metrics = cross_validate(texts, labels, TrainSettings(folds=args.folds))
        title = f"{args.folds}-fold cross-validation, folds grouped by normalized text"
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                          for k, v in metrics.as_json().items()}))
    else:
        print(_table(metrics.as_json() | {"recall_at_fpr_0.002": metrics.recall_at_fpr_0_002}, title))
    return 0


def _export(args: argparse.Namespace) -> int:
    import asyncio
    import csv

    from sqlalchemy import select

    from authn.db import Database
    from moderation.records import ReviewItem

    async def rows() -> list[tuple[str, str]]:
        database = Database(args.database)
        try:
            async with database.transaction() as session:
                result = await session.execute(select(ReviewItem.content, ReviewItem.resolution).where(
                    ReviewItem.kind == "content", ReviewItem.resolution.in_(("spam", "ham"))))
                out = []
                for content, resolution in result.all():
                    text = "\n".join(f.get("text", "") for f in (content or {}).get("fields", []))
                    if text.strip():
                        out.append((text, str(resolution)))
                return out
        finally:
            await database.dispose()

    labeled = asyncio.run(rows())
    with open(args.out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(labeled)
    print(f"wrote {len(labeled)} labeled texts to {args.out}")
    return 0


def _need_both_classes(labels: list[int]) -> None:
    if not 0 < sum(labels) < len(labels):
        raise ModerationError("the data needs both spam and ham rows")


def _table(values: dict[str, float | int], title: str) -> str:
    lines = [title]
    for key in ("n", "precision", "recall", "mcc", "pr_auc", "recall_at_fpr_0.001", "recall_at_fpr_0.002",
                "recall_at_fpr_0.01"):
        value = values[key]
        lines.append(f"  {key:<22} {value if isinstance(value, int) else f'{value:.4f}'}")
    return "\n".join(lines)
