"""Canonical request paths.

tsgate authorizes exactly the path it forwards. The raw request target is decoded once, here;
anything that two parsers could read two ways is refused instead of guessed at:

* encoded separators (``%2F``, ``%5C``), backslashes, NUL and other control characters,
* dot segments (``.``, ``..``, also percent-encoded), and ``;`` path parameters (``..;/``),
* invalid percent-escapes and bytes that are not UTF-8.

Repeated slashes collapse into one. The canonical path (decoded text) is what rules match; the
forwarded path is its unambiguous re-encoding, so the backend decodes exactly what we matched.
Case is preserved (the route matcher compares case-insensitively, so ``/ADMIN`` cannot dodge an
``/admin`` rule on a case-insensitive backend)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

__all__ = ["CanonicalPath", "PathCanonicalizer", "PathRefusal", "canonicalize"]

# RFC 3986 pchar minus ';' (refused) and '%' (always an escape): unreserved, sub-delims, ':' '@'.
_SAFE = "-._~!$&'()*+,=:@"
_VALID_ESCAPES = re.compile(rb"(?:[^%]|%[0-9A-Fa-f]{2})*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_PATH_BYTES = 8192


@dataclass(frozen=True, slots=True)
class CanonicalPath:
    path: str  # decoded text: what rules match and guards see
    forwarded: bytes  # re-encoded ASCII: what the upstream receives


@dataclass(frozen=True, slots=True)
class PathRefusal:
    reason: str  # stable id, e.g. "path.dot_segment"
    detail: str
    status: int = 400


def _refuse(reason: str, detail: str, status: int = 400) -> PathRefusal:
    return PathRefusal(reason, detail, status)


def _canonical_segment(raw: bytes) -> str | PathRefusal:
    if b";" in raw:
        return _refuse("path.semicolon", "Path parameters (';') are not accepted.")
    if b"%" in raw:
        if not _VALID_ESCAPES.fullmatch(raw):
            return _refuse("path.bad_escape", "The path has an invalid percent-escape.")
        decoded = unquote_to_bytes(raw)
    else:
        decoded = raw
    if b"/" in decoded:
        return _refuse("path.encoded_separator", "Encoded '/' is not accepted in paths.")
    if b"\\" in decoded:
        return _refuse("path.backslash", "Backslashes are not accepted in paths.")
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return _refuse("path.not_utf8", "The path is not valid UTF-8.")
    if _CONTROL.search(text):
        return _refuse("path.control_char", "Control characters (NUL, CR, LF, ...) are not accepted.")
    if text in (".", ".."):
        return _refuse("path.dot_segment", "Dot segments ('.' and '..') are not accepted.")
    return text


def canonicalize(raw_path: bytes) -> CanonicalPath | PathRefusal:
    """Make ``raw_path`` (the request target's path, still percent-encoded) canonical, or refuse it."""
    if len(raw_path) > MAX_PATH_BYTES:
        return _refuse("path.too_long", "The path is too long.", 414)
    if not raw_path.startswith(b"/"):
        return _refuse("path.not_origin_form", "The request target must be a path starting with '/'.")
    if b"\\" in raw_path:
        return _refuse("path.backslash", "Backslashes are not accepted in paths.")
    segments: list[str] = []
    for raw in raw_path[1:].split(b"/"):
        if not raw:
            continue  # '//' collapses; a trailing '/' is restored below
        seg = _canonical_segment(raw)
        if isinstance(seg, PathRefusal):
            return seg
        segments.append(seg)
    trailing = "/" if segments and raw_path.endswith(b"/") else ""
    path = "/" + "/".join(segments) + trailing
    forwarded = "/" + "/".join(quote(s, safe=_SAFE) for s in segments) + trailing
    return CanonicalPath(path, forwarded.encode("ascii"))


class PathCanonicalizer:
    """``canonicalize`` with a bounded memo: the same few paths arrive over and over."""

    __slots__ = ("_memo", "_size")

    def __init__(self, size: int = 8192) -> None:
        self._memo: dict[bytes, CanonicalPath | PathRefusal] = {}
        self._size = size

    def __call__(self, raw_path: bytes) -> CanonicalPath | PathRefusal:
        hit = self._memo.get(raw_path)
        if hit is None:
            hit = canonicalize(raw_path)
            if len(self._memo) >= self._size:  # attacker-chosen keys: bound it, don't be clever
                self._memo.clear()
            self._memo[raw_path] = hit
        return hit
