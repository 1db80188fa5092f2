"""The SQLite review queue on a full disk, with a real (tiny) tmpfs: a post that would be held
gets 503 problem+json ``moderation.unavailable`` instead of a 202 it cannot honour, nothing is
acknowledged that was not written, and once space is freed holds are acknowledged again without
restarting the gateway."""

from __future__ import annotations

import errno
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Backend, GatewayProc, Response, policy_text, request
from tests.ops.conftest import HOLD_POLICY, SPAM, assert_problem, poll


def _fill(directory: Path) -> Path:
    """Write a file until the file system says it is full (ENOSPC)."""
    filler = directory / "filler"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        try:  # the last partial block too
            while True:
                out.write(b"\0" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_full_disk_refuses_holds_with_503_and_recovers(
        tiny_tmpfs: Path, backend: Backend, start_gateway: Callable[..., GatewayProc]) -> None:
    """Disk full under the queue database: held posts get 503 problem+json with Retry-After (the
    write is retried up to the deadline first), the 202s given before and after are all in the
    table, and after the filler is removed holds work again in the same gateway process."""
    db = tiny_tmpfs / "queue.db"
    policy = HOLD_POLICY.format(db=f"sqlite+aiosqlite:///{db}")
    gw = start_gateway(policy_text(backend.port, policy, trusted='["127.0.0.1/32"]'))
    serial = iter(range(1_000_000))

    def post() -> Response:
        n = next(serial)
        return request(gw.port, "POST", "/api/debug/echo/comments",
                       body=json.dumps({"body": SPAM.format(n=n) + " " + "padding " * 200}).encode(),
                       headers={"Content-Type": "application/json", "X-Forwarded-For": f"10.0.{n // 256}.{n % 256}"},
                       timeout=10)

    answers = [post() for _ in range(3)]
    assert [a.status for a in answers] == [202] * 3
    filler = _fill(tiny_tmpfs)
    full: list[Response] = []
    for _ in range(40):  # pages already allocated may take a few rows; then the disk is full
        full.append(post())
        if full[-1].status == 503:
            break
    refused = full[-1]
    assert refused.status == 503, [a.status for a in full]
    problem = assert_problem(refused)
    assert problem["reason"] == "moderation.unavailable" and refused.headers.get("retry-after")
    assert {a.status for a in full} <= {202, 503}
    again = post()
    assert again.status == 503 and assert_problem(again)["reason"] == "moderation.unavailable"
    assert request(gw.port, "GET", "/api/debug/echo/x").status == 200  # the rest of the gateway works
    answers += [*full, again]

    filler.unlink()
    recovered: list[Response] = []

    def hold_again() -> bool:
        recovered.append(post())
        return recovered[-1].status == 202

    poll(hold_again, 10, "a hold acknowledged after space was freed", every=0.2)
    answers += recovered
    assert gw.proc.poll() is None
    acknowledged = {str(assert_problem(a)["decision_id"]) for a in answers if a.status == 202}
    refusals = {str(assert_problem(a)["decision_id"]) for a in answers if a.status == 503}
    assert all(a.status in (202, 503) for a in answers)
    with sqlite3.connect(db) as conn:
        rows = {r[0] for r in conn.execute("SELECT decision_id FROM review_items WHERE action = 'hold'")}
    assert acknowledged <= rows, f"acknowledged but never written: {acknowledged - rows}"
    assert not refusals & rows, f"refused with 503 but written: {refusals & rows}"
