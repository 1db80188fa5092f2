"""RateLimit-Policy / RateLimit (draft-ietf-httpapi-ratelimit-headers-10) and Retry-After."""

from __future__ import annotations

import math
import re

import limits
from hypothesis import given
from hypothesis import strategies as st

from ratelimit.headers import rate_limit_headers, retry_after, sf_string
from ratelimit.limiter import LimitResult
from ratelimit.spec import LimitSpec

# RFC 9651 List of Items whose bare item is an sf-string and whose params are key=sf-integer.
_MEMBER = re.compile(r'"((?:[^"\\]|\\["\\])*)"((?:;[a-z*][a-z0-9_\-.*]*=-?[0-9]{1,15})*)')


def parse_sf_list(value: str) -> list[tuple[str, dict[str, int]]]:
    """A tiny structured-field list parser for string items with integer parameters."""
    out: list[tuple[str, dict[str, int]]] = []
    for raw in value.split(","):
        member = raw.strip(" ")
        match = _MEMBER.fullmatch(member)
        assert match is not None, f"not an sf-list member: {member!r}"
        params = dict(p.split("=") for p in match.group(2).split(";")[1:])
        out.append((re.sub(r"\\(.)", r"\1", match.group(1)), {k: int(v) for k, v in params.items()}))
    return out


def result(rate: str, *, allowed: bool = True, remaining: int = 3, reset_after: float = 12.2) -> LimitResult:
    return LimitResult(allowed, limits.parse(rate), remaining, reset_after)


def test_policy_and_current_limit_syntax() -> None:
    """Both fields parse as sf-lists; the most restrictive policy comes first and RateLimit names it."""
    login = LimitSpec.build("login", "5/minute; 100/hour")
    api = LimitSpec.build("api", "1000/hour")
    headers = dict(
        rate_limit_headers([(api, result("1000/hour", remaining=900)), (login, result("5/minute", remaining=1))])
    )
    policy = parse_sf_list(headers["RateLimit-Policy"])
    assert policy == [
        ("login", {"q": 5, "w": 60}),
        ("login-1", {"q": 100, "w": 3600}),
        ("api", {"q": 1000, "w": 3600}),
    ]
    assert parse_sf_list(headers["RateLimit"]) == [("login", {"r": 1, "t": 13})]


def test_refused_limit_is_reported_first() -> None:
    """The exceeded rate of a multi-window spec is listed and reported first."""
    spec = LimitSpec.build("mw", "5/minute; 3/hour")
    headers = dict(rate_limit_headers([(spec, result("3/hour", allowed=False, remaining=0, reset_after=99.5))]))
    assert parse_sf_list(headers["RateLimit-Policy"])[0] == ("mw-1", {"q": 3, "w": 3600})
    assert parse_sf_list(headers["RateLimit"]) == [("mw-1", {"r": 0, "t": 100})]


def test_errored_results_give_no_headers() -> None:
    """A check that failed does not advertise anything."""
    spec = LimitSpec.build("e", "5/minute")
    errored = LimitResult(True, limits.parse("5/minute"), 5, 0.0, "store timeout")
    assert rate_limit_headers([(spec, errored)]) == []


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_retry_after_never_before_reset(reset_after: float) -> None:
    """Retry-After is whole seconds, at least 1, and never earlier than the reset."""
    seconds = int(retry_after(result("5/minute", allowed=False, remaining=0, reset_after=reset_after)))
    assert seconds >= reset_after and seconds >= 1
    assert seconds == max(1, math.ceil(reset_after))


def test_sf_string_escapes() -> None:
    """Quotes and backslashes are escaped; the parser reads them back."""
    assert parse_sf_list(sf_string('a"b\\c') + ";q=1") == [('a"b\\c', {"q": 1})]
