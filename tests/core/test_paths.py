"""Path canonicalization: what is matched is what is forwarded, and ambiguity is refused."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.paths import CanonicalPath, PathCanonicalizer, PathRefusal, canonicalize


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"/a/%2e%2e/admin", "path.dot_segment"),
        (b"/a/../admin", "path.dot_segment"),
        (b"/a/./b", "path.dot_segment"),
        (b"/a/%2E/b", "path.dot_segment"),
        (b"/a/..;/admin", "path.semicolon"),
        (b"/admin;jsessionid=1", "path.semicolon"),
        (b"/a%2fadmin", "path.encoded_separator"),
        (b"/a%2Fadmin", "path.encoded_separator"),
        (b"/a%5cadmin", "path.backslash"),
        (b"/a\\admin", "path.backslash"),
        (b"/a%00b", "path.control_char"),
        (b"/a%0d%0aX-Injected:1", "path.control_char"),
        (b"/a%zz", "path.bad_escape"),
        (b"/a%", "path.bad_escape"),
        (b"/a%ff", "path.not_utf8"),
        (b"http://evil/a", "path.not_origin_form"),
        (b"*", "path.not_origin_form"),
    ],
)
def test_ambiguous_paths_are_refused(raw: bytes, reason: str) -> None:
    """Every form two parsers could read two ways is refused with a stable reason id."""
    result = canonicalize(raw)
    assert isinstance(result, PathRefusal)
    assert result.reason == reason
    assert result.status == 400


@pytest.mark.parametrize(
    ("raw", "path", "forwarded"),
    [
        (b"/", "/", b"/"),
        (b"//admin", "/admin", b"/admin"),
        (b"/a//b///c/", "/a/b/c/", b"/a/b/c/"),
        (b"/%41dmin", "/Admin", b"/Admin"),
        (b"/caf%c3%a9", "/caf\u00e9", b"/caf%C3%A9"),
        (b"/a%20b", "/a b", b"/a%20b"),
        (b"/100%25", "/100%", b"/100%25"),
        (b"/u/@bob:1", "/u/@bob:1", b"/u/@bob:1"),
    ],
)
def test_canonical_forms(raw: bytes, path: str, forwarded: bytes) -> None:
    """Unambiguous paths decode once and re-encode one way; repeated slashes collapse."""
    result = canonicalize(raw)
    assert result == CanonicalPath(path, forwarded)


def test_overlong_path_is_414() -> None:
    """A path longer than the limit is refused with 414, not processed."""
    result = canonicalize(b"/" + b"a" * 9000)
    assert isinstance(result, PathRefusal) and result.status == 414


def test_memo_is_bounded() -> None:
    """The canonicalization memo never grows past its size with attacker-chosen paths."""
    canon = PathCanonicalizer(size=100)
    for i in range(1000):
        canon(b"/p/%d" % i)
    assert len(canon._memo) <= 100


segment_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\;"), min_size=0, max_size=12
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(segment_text, st.sampled_from([".", "..", "%2e%2e", "%2f", "%00", "", "%"])),
                max_size=8))
def test_canonical_path_is_a_fixed_point(segments: list[str]) -> None:
    """Forwarding the canonical form and canonicalizing again gives the same path: the upstream
    decodes exactly what tsgate matched, and no dot segment or separator survives."""
    raw = ("/" + "/".join(segments)).encode("utf-8")
    first = canonicalize(raw)
    if isinstance(first, PathRefusal):
        return
    again = canonicalize(first.forwarded)
    assert again == first
    decoded = unquote_to_bytes(first.forwarded).decode("utf-8")
    assert decoded == first.path
    parts = first.path.split("/")
    assert "." not in parts and ".." not in parts
    assert "\\" not in first.path and "\x00" not in first.path
    assert first.forwarded.isascii()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_raise(tail: bytes) -> None:
    """Any byte string gives a canonical path or a refusal, never an exception."""
    result = canonicalize(b"/" + tail)
    assert isinstance(result, CanonicalPath | PathRefusal)
