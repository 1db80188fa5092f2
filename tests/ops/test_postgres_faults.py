"""PostgreSQL (the review queue's database) stopped and restarted under a gateway that holds
content, with a private PostgreSQL cluster: a hold is acknowledged (202) only once its row is
committed, the outage is a 503 problem+json with a stable reason (never a 202, never a 500),
writes are retried within a bounded deadline, and they work again after the restart without
restarting the gateway. Nothing acknowledged is lost."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from tests.conftest import Backend, GatewayProc, Response, policy_text, request
from tests.ops.conftest import HOLD_POLICY, SPAM, Load, PostgresServer, assert_problem, poll, safe_request

CLEAN = "Lovely photo of the lake. Are we still on for the walk on Sunday morning? I can bring coffee."


def _post(gw: GatewayProc, text: str, client: int) -> Response | str:
    # The test client is a trusted proxy: each post comes from its own anonymous client address,
    # so per-account repetition never turns a hold into a block.
    address = f"10.{client // 65536 % 256}.{client // 256 % 256}.{client % 256}"
    return safe_request(gw.port, "POST", "/api/debug/echo/comments", body=json.dumps({"body": text}).encode(),
                        headers={"Content-Type": "application/json", "X-Forwarded-For": address}, timeout=10)


def _held_ids(pg: PostgresServer, database: str) -> set[str]:
    return set(pg.query(database, "SELECT decision_id FROM review_items WHERE action = 'hold'"))


def test_postgres_restart_never_acknowledges_a_hold_that_is_not_durable(
        backend: Backend, postgres_up: PostgresServer, start_gateway: Callable[..., GatewayProc]) -> None:
    """Three clients posting spam while PostgreSQL is stopped (fast shutdown) and started again:
    every answer is 202 (held) or 503 ``moderation.unavailable`` problem+json with Retry-After,
    each within the retry deadline; clean posts still pass; every 202's decision id has its row
    afterwards; and holds are acknowledged again after the restart, same gateway process."""
    database = postgres_up.create_database()
    gw = start_gateway(policy_text(backend.port, HOLD_POLICY.format(db=database), trusted='["127.0.0.1/32"]'))
    counter = iter(range(1_000_000))
    lock = threading.Lock()

    def hold(_index: int) -> Response | str:
        with lock:
            n = next(counter)
        started = time.monotonic()
        answer = _post(gw, SPAM.format(n=n), n)
        if isinstance(answer, Response):
            answer.headers["x-test-seconds"] = f"{time.monotonic() - started:.3f}"
        return answer

    def statuses(answers: list[Response | str]) -> set[int | str]:
        return {a.status if isinstance(a, Response) else a for a in answers}

    with Load(hold, threads=3) as load:
        load.wait(lambda got: 202 in statuses(got), 0, 15, "a hold while PostgreSQL is up")
        postgres_up.stop("fast")
        stopped = time.monotonic()
        load.wait(lambda got: 503 in statuses(got), stopped, 15, "503 while PostgreSQL is down")
        clean = _post(gw, CLEAN, 999_999)
        assert isinstance(clean, Response) and clean.status == 200  # only holds need the database
        outage = load.since(stopped)
        postgres_up.start()
        restarted = time.monotonic()
        load.wait(lambda got: 202 in statuses(got), restarted + 0.1, 15, "holds acknowledged after the restart")
    answers = [a for _, _, a in load.answers]
    assert statuses(answers) <= {202, 503}, statuses(answers)
    assert 503 in statuses(outage)
    acknowledged, refused = [], []
    for answer in answers:
        assert isinstance(answer, Response)
        problem = assert_problem(answer)
        if answer.status == 202:
            assert problem["reason"] == "moderation.held"
            acknowledged.append(str(problem["decision_id"]))
        else:
            assert problem["reason"] == "moderation.unavailable" and answer.headers.get("retry-after")
            refused.append(str(problem["decision_id"]))
        assert float(answer.headers["x-test-seconds"]) < 4.0  # the 2 s retry deadline, plus the rest
    held = _held_ids(postgres_up, database)
    assert set(acknowledged) <= held, f"acknowledged but not in the table: {set(acknowledged) - held}"
    assert len(acknowledged) >= 2 and refused
    assert gw.proc.poll() is None


def test_a_restart_shorter_than_the_deadline_costs_a_wait_not_a_503(
        backend: Backend, postgres_up: PostgresServer, start_gateway: Callable[..., GatewayProc]) -> None:
    """A hold posted while PostgreSQL is down, which comes back within the retry deadline: the
    queue write is retried (the gateway logs the retry), the client gets 202 and the row is there."""
    database = postgres_up.create_database()
    gw = start_gateway(policy_text(backend.port, HOLD_POLICY.format(db=database), trusted='["127.0.0.1/32"]'))
    first = _post(gw, SPAM.format(n="first"), 1_000_001)
    assert isinstance(first, Response) and first.status == 202, first
    postgres_up.stop("fast")
    answers: list[Response | str] = []
    posting = threading.Thread(target=lambda: answers.append(_post(gw, SPAM.format(n="during"), 1_000_002)))
    posting.start()
    poll(lambda: "review queue: writing the hold" in gw.log_path.read_text(errors="replace"), 5,
         "a failed first try, logged")
    postgres_up.start()
    posting.join(10)
    (answer,) = answers
    assert isinstance(answer, Response) and answer.status == 202, answer
    decision = str(assert_problem(answer)["decision_id"])
    assert decision in _held_ids(postgres_up, database)
    assert request(gw.admin_port, "GET", "/readyz").status == 200
