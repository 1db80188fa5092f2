"""Content extraction: the texts a route declares (JSON pointers, form fields) out of a buffered
request body, bounded in size, depth and count.

A malformed or unexpected body is an expected outcome, returned as a ``BodyProblem`` value (with
the status and stable reason the guard answers with when the policy says ``reject``), never an
exception: a client must not be able to turn a comment into a 500."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from moderation.config import ContentFields

__all__ = ["BodyProblem", "Extracted", "FieldText", "extract_content"]

_FORM = "application/x-www-form-urlencoded"
_MAX_FORM_FIELDS = 1_000
# A JSON string literal; the two branches never overlap, so matching is linear.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


@dataclass(frozen=True, slots=True)
class FieldText:
    field: str  # the declared field that produced it (pointer or form:name)
    text: str


@dataclass(frozen=True, slots=True)
class Extracted:
    texts: tuple[FieldText, ...]  # empty: none of the declared fields is present (nothing to score)
    truncated: bool = False  # more strings than max_values, or a text cut to max_text_chars


@dataclass(frozen=True, slots=True)
class BodyProblem:
    status: int  # 400 malformed / too deep, 413 too large, 415 not JSON or form
    reason: str  # stable id: moderation.body_malformed | body_too_deep | body_too_large | body_unsupported
    detail: str


def _media_type(content_type: bytes | None) -> str:
    if not content_type:
        return ""
    return content_type.split(b";", 1)[0].strip().lower().decode("latin-1")


def _max_depth_exceeded(body: bytes, limit: int) -> bool:
    """Nesting depth of a JSON text beyond ``limit``, without recursion and without a Python loop
    per byte: strings are cut out (one linear regex pass), then brackets are summed with numpy."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # cannot be that deep: the common case costs two counts
    codes = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    steps = ((codes == 0x5B) | (codes == 0x7B)).astype(np.int32) - ((codes == 0x5D) | (codes == 0x7D))
    return bool(len(steps)) and int(np.cumsum(steps).max()) > limit


def _resolve(document: Any, steps: list[str], out: list[Any], budget: int) -> None:
    """Values at the pointer's steps; ``*`` fans out over arrays and objects (bounded by ``budget``)."""
    if len(out) >= budget:
        return
    if not steps:
        out.append(document)
        return
    step, rest = steps[0], steps[1:]
    if step == "*":
        if isinstance(document, dict):
            children = list(document.values())
        else:
            children = document if isinstance(document, list) else []
        for child in children:
            _resolve(child, rest, out, budget)
            if len(out) >= budget:
                return
        return
    if isinstance(document, dict):
        if step in document:
            _resolve(document[step], rest, out, budget)
    elif isinstance(document, list) and step.isdigit() and len(step) < 10 and int(step) < len(document):
        _resolve(document[int(step)], rest, out, budget)


def _strings(value: Any, out: list[str], budget: int) -> None:
    """Every string in ``value`` (a string, or strings nested in arrays/objects), iteratively."""
    stack = [value]
    while stack and len(out) < budget:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        # numbers, booleans and null carry no content


def _bounded_text(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    half = limit // 2
    return text[:half] + "\n" + text[-half:], True  # head and tail: spam can sit at either end


def extract_content(body: bytes | None, content_type: bytes | None, spec: ContentFields) -> Extracted | BodyProblem:
    """The declared texts of ``body``. No body (or an empty one) is ``Extracted(())``."""
    if not body:
        return Extracted(())
    if len(body) > spec.max_body_bytes:
        return BodyProblem(413, "moderation.body_too_large", f"The body exceeds {spec.max_body_bytes} bytes.")
    media = _media_type(content_type)
    pointers = [f for f in spec.fields if f.startswith("/")]
    form_fields = [f[5:] for f in spec.fields if f.startswith("form:")]
    found: list[tuple[str, Any]] = []
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        if not pointers:
            return BodyProblem(415, "moderation.body_unsupported", "This route takes a form body, not JSON.")
        if _max_depth_exceeded(body, spec.max_depth):
            return BodyProblem(400, "moderation.body_too_deep", f"JSON nesting deeper than {spec.max_depth}.")
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return BodyProblem(400, "moderation.body_malformed", "The body is not valid UTF-8 JSON.")
        for pointer in pointers:
            steps = [s.replace("~1", "/").replace("~0", "~") for s in pointer.split("/")[1:]]
            values: list[Any] = []
            _resolve(document, steps, values, spec.max_values)
            found.extend((pointer, v) for v in values)
    elif media == _FORM:
        if not form_fields:
            return BodyProblem(415, "moderation.body_unsupported", "This route takes a JSON body, not a form.")
        try:
            pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=False,
                              errors="strict", max_num_fields=_MAX_FORM_FIELDS)
        except (UnicodeDecodeError, ValueError):
            return BodyProblem(400, "moderation.body_malformed", "The form body is malformed.")
        wanted = set(form_fields)
        found.extend((f"form:{name}", value) for name, value in pairs if name in wanted)
    else:
        shown = media or "none"
        return BodyProblem(415, "moderation.body_unsupported",
                           f"Content type {shown[:60]!r} is not accepted here; send JSON or a form.")
    texts: list[FieldText] = []
    truncated = False
    for field_name, value in found:
        strings: list[str] = []
        _strings(value, strings, spec.max_values - len(texts))
        for text in strings:
            bounded, cut = _bounded_text(text, spec.max_text_chars)
            truncated = truncated or cut
            texts.append(FieldText(field_name, bounded))
        if len(texts) >= spec.max_values:
            truncated = True
            break
    return Extracted(tuple(texts), truncated)
