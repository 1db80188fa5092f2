"""``tsgate followers simulate → eval → scan`` on a small run, through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main


def test_simulate_eval_scan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """simulate writes the documented files; eval --json has the documented shape; scan reports blocks."""
    out = tmp_path / "run"
    assert main(["followers", "simulate", "--out", str(out), "--seed", "4", "--accounts", "2000", "--days", "2",
                 "--orders-per-kind", "1", "--order-min", "100", "--order-max", "200"]) == 0
    first = json.loads((out / "events.jsonl").read_text().splitlines()[0])
    assert {"ts", "actor", "target", "action", "ip", "ua", "actor_created"} <= set(first)
    labels = json.loads((out / "labels.json").read_text())
    assert labels["accounts"] and labels["orders"] and labels["viral"]
    capsys.readouterr()
    assert main(["followers", "eval", "--events", str(out / "events.jsonl"), "--labels", str(out / "labels.json"),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["by_kind"]) == {"burst", "drip", "camouflage", "hijacked", "shared_infra"}
    for row in report["by_kind"].values():
        assert {"precision", "recall", "f1", "median_time_to_detect_s"} <= set(row)
    assert {"precision", "recall", "f1"} <= set(report["overall"])
    assert isinstance(report["false_flags_per_100k_honest"], float | int)
    assert main(["followers", "eval", "--events", str(out / "events.jsonl"), "--labels", str(out / "labels.json")]) == 0
    assert "false flags per 100k" in capsys.readouterr().out
    assert main(["followers", "scan", "--events", str(out / "events.jsonl"), "--json", "--blocks", "2"]) == 0
    scan = json.loads(capsys.readouterr().out)
    assert scan["edges"] > 1000 and scan["blocks"]


def test_bad_input_is_one_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed events file names the line; a missing file is an error, not a traceback."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ts": 1, "actor": "a", "target": "b"}\n{"ts": "soon"}\n')
    labels = tmp_path / "labels.json"
    labels.write_text('{"accounts": {}}')
    assert main(["followers", "eval", "--events", str(bad), "--labels", str(labels)]) == 1
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main(["followers", "scan", "--events", str(tmp_path / "missing.jsonl")]) == 1
    assert main(["followers", "simulate", "--out", str(tmp_path), "--days", "1"]) == 1
