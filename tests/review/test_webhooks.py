"""The webhook sender against a real local HTTP receiver: signed bodies the receiver verifies,
exponential back-off between attempts (an injected sleep records the delays), dead letters after
the last attempt, and a retry that delivers. Signatures fail closed on tampering and staleness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authn.db import Database
from gateway.core.clock import FrozenClock
from review.webhooks import WebhookSender, sign, verify_signature
from tests.review.helpers import WEBHOOK_SECRET, Receiver, receiver


@pytest.fixture
def hook() -> Iterator[Receiver]:
    yield from receiver()


def test_signatures_verify_and_fail_closed() -> None:
    """A changed body, another secret, an old timestamp or a malformed header all fail."""
    header = sign(b"k", b"{}", 1000)
    assert verify_signature(b"k", b"{}", header, 1000)
    assert not verify_signature(b"k", b"{ }", header, 1000)
    assert not verify_signature(b"other", b"{}", header, 1000)
    assert not verify_signature(b"k", b"{}", header, 1000 + 301)
    assert not verify_signature(b"k", b"{}", "v1=abc", 1000)


async def test_back_off_then_dead_letter_then_retry_delivers(db: Database, hook: Receiver) -> None:
    """Four attempts with delays 1, 2, 4 s (injected sleep); then dead; a retry after recovery delivers."""
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    sender = WebhookSender(db, hook.url, WEBHOOK_SECRET.encode(), attempts=4, backoff=1.0, timeout=2.0,
                           clock=FrozenClock(time.time()), sleep=sleep)
    hook.status = 500
    state = await sender.deliver("remove", None, {"event": "remove", "review_item": "x"})
    assert state == "dead" and delays == [1.0, 2.0, 4.0] and hook.received == []
    (dead,) = await sender.deliveries("dead")
    assert dead["attempts"] == 4 and dead["last_error"] == "HTTP 500"
    hook.status = 200
    assert await sender.retry(dead["id"]) == "delivered"
    received = await asyncio.to_thread(hook.wait, 1)
    assert received[0]["payload"] == {"event": "remove", "review_item": "x"} and hook.bad_signatures == 0
    assert (await sender.deliveries("delivered"))[0]["id"] == dead["id"]


async def test_an_unreachable_receiver_is_dead_lettered_with_the_reason(db: Database) -> None:
    """Connection refused is a failure like any other: retried, then dead with the error kept."""
    async def sleep(seconds: float) -> None:
        return None

    sender = WebhookSender(db, "http://127.0.0.1:9/hook", b"k", attempts=2, backoff=0.01, timeout=1.0, sleep=sleep)
    assert await sender.deliver("ban", None, {"event": "ban"}) == "dead"
    (dead,) = await sender.deliveries("dead")
    assert dead["attempts"] == 2 and "ConnectionRefusedError" in str(dead["last_error"])


@given(st.text(max_size=600))
def test_any_signature_header_is_a_verdict_never_an_exception(header: str) -> None:
    """Hostile headers (huge numbers, odd separators, unicode digits) are refused, never raise."""
    assert verify_signature(b"k", b"{}", header, 1000.0) in (True, False)


@pytest.mark.parametrize("header", ["t=" + "9" * 400 + ",v1=00", "t=\u0661\u0662,v1=00", "t=,v1=", ",,,=", "t=-5,v1=0"])
def test_malformed_signature_headers_are_refused(header: str) -> None:
    """A named case for each parser trap: overflow, non-ASCII digits, empty and negative fields."""
    assert not verify_signature(b"k", b"{}", header, 1000.0)
