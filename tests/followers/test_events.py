"""The JSONL event format: parsing, normalization, round trips, errors that name the line."""

from __future__ import annotations

import json

import pytest

from followers.errors import EventFormatError
from followers.events import FollowEvent, event_from_json, event_to_json, network_prefix, read_events, ua_hash


def test_network_prefix_ipv4_ipv6_and_garbage() -> None:
    """IPv4 → /24, IPv6 → /48, IPv4-mapped IPv6 → the IPv4 /24, junk → '?'."""
    assert network_prefix("198.51.100.200") == "198.51.100.0/24"
    assert network_prefix("2001:db8:abcd:12::1") == "2001:db8:abcd::/48"
    assert network_prefix("::ffff:198.51.100.9") == "198.51.100.0/24"
    assert network_prefix("not-an-ip") == "?"


def test_simulator_line_parses_with_raw_ip_and_ua() -> None:
    """ip and ua are reduced to prefix and hash; ISO times are accepted."""
    event = event_from_json({"ts": "2025-01-01T00:00:10Z", "actor": "a", "target": "b", "action": "follow",
                             "ip": "203.0.113.9", "ua": "curl/8", "actor_created": 1_700_000_000})
    assert event.ts == 1_735_689_610.0
    assert event.prefix == "203.0.113.0/24" and event.ua == ua_hash("curl/8")
    assert event.actor_created == 1_700_000_000.0 and event.actor_posts is None


def test_round_trip_of_recorded_events() -> None:
    """A recorded event (prefix + hash, no raw ip/ua) survives JSONL and stream-field round trips."""
    event = FollowEvent(ts=12.5, actor="a", target="b", action="unfollow", prefix="10.0.0.0/24", ua="ab12",
                        actor_created=3.0, actor_posts=4, challenges=2)
    assert event_from_json(json.loads(event_to_json(event))) == event
    fields = {k.encode(): v.encode() for k, v in event.as_stream_fields().items()}
    assert FollowEvent.from_stream_fields(fields) == event


@pytest.mark.parametrize("line, message", [
    ('{"actor": "a", "target": "b"}', "ts: required"),
    ('{"ts": 1, "actor": "", "target": "b"}', "actor"),
    ('{"ts": 1, "actor": "a", "target": "b", "action": "like"}', "action"),
    ('{"ts": 1, "actor": "a", "target": "b", "actor_posts": -1}', "actor_posts"),
    ("[1, 2]", "JSON object"),
    ("{nope", "not JSON"),
])
def test_bad_lines_name_the_line(line: str, message: str) -> None:
    """A malformed line raises EventFormatError naming the source and line number."""
    with pytest.raises(EventFormatError, match=message) as info:
        list(read_events(["", '{"ts": 1, "actor": "a", "target": "b"}', line], source="f.jsonl"))
    assert "f.jsonl:3" in str(info.value)
