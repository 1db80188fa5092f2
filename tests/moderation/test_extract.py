"""Content extraction: declared fields only, bounded, and malformed bodies as values (never raised)."""

from __future__ import annotations

import json
import time

import pytest

from moderation.config import ContentFields
from moderation.errors import ModerationConfigError
from moderation.extract import BodyProblem, Extracted, extract_content

JSON = b"application/json"
FORM = b"application/x-www-form-urlencoded"


def texts(result: Extracted | BodyProblem) -> list[tuple[str, str]]:
    assert isinstance(result, Extracted), result
    return [(t.field, t.text) for t in result.texts]


def test_json_pointers_several_fields_and_wildcards() -> None:
    """Several pointers per route; '*' fans out over arrays; nested strings under a pointer count."""
    spec = ContentFields(("/post/title", "/post/body", "/tags/*", "/a~1b"))
    body = json.dumps({"post": {"title": "Hi", "body": {"p": ["one", "two"]}}, "tags": ["x", 5, "y"],
                       "a/b": "slash", "other": "ignored"}).encode()
    assert texts(extract_content(body, JSON + b"; charset=utf-8", spec)) == [
        ("/post/title", "Hi"), ("/post/body", "one"), ("/post/body", "two"), ("/tags/*", "x"), ("/tags/*", "y"),
        ("/a~1b", "slash")]


def test_form_fields() -> None:
    """form:name reads url-encoded form fields (repeated fields all count)."""
    spec = ContentFields(("form:body",))
    assert texts(extract_content(b"body=hello+world&x=1&body=%C3%A9", FORM, spec)) == [
        ("form:body", "hello world"), ("form:body", "é")]


def test_absent_fields_and_empty_body_are_nothing_to_score() -> None:
    """A body without the declared fields, or no body, is an empty extraction (not an error)."""
    spec = ContentFields(("/comment/body",))
    assert texts(extract_content(b'{"comment": {}}', JSON, spec)) == []
    assert texts(extract_content(None, JSON, spec)) == []
    assert texts(extract_content(b"", None, spec)) == []


@pytest.mark.parametrize(("body", "ctype", "status", "reason"), [
    (b'{"comment": ', JSON, 400, "moderation.body_malformed"),
    (b'\xff\xfe{"a": 1}', JSON, 400, "moderation.body_malformed"),
    (b"[" * 10_000 + b"]" * 10_000, JSON, 400, "moderation.body_too_deep"),
    (b"hello", b"text/plain", 415, "moderation.body_unsupported"),
    (b"hello", None, 415, "moderation.body_unsupported"),
    (b"a=%ZZ%ff", FORM, 415, "moderation.body_unsupported"),  # this route reads JSON only
])
def test_malformed_and_unexpected_bodies_are_values(body: bytes, ctype: bytes | None, status: int, reason: str) -> None:
    """Malformed JSON, bad UTF-8, deep nesting and unexpected media types come back as BodyProblem."""
    result = extract_content(body, ctype, ContentFields(("/comment/body",)))
    assert isinstance(result, BodyProblem)
    assert (result.status, result.reason) == (status, reason)


def test_deep_nesting_inside_strings_is_not_depth() -> None:
    """Brackets inside JSON strings do not count as nesting."""
    body = json.dumps({"comment": {"body": "[" * 500}}).encode()
    assert texts(extract_content(body, JSON, ContentFields(("/comment/body",)))) == [("/comment/body", "[" * 500)]


def test_one_megabyte_body_is_refused_fast() -> None:
    """Pathological input: a 1 MB body over the route's bound is a 413 value, at once."""
    body = json.dumps({"comment": {"body": "x" * 1_000_000}}).encode()
    started = time.perf_counter()
    result = extract_content(body, JSON, ContentFields(("/comment/body",), max_body_bytes=256 * 1024))
    assert time.perf_counter() - started < 0.1
    assert isinstance(result, BodyProblem) and result.status == 413


def test_one_megabyte_body_within_bounds_keeps_head_and_tail() -> None:
    """A 1 MB text allowed in is cut to max_text_chars, keeping both ends (spam can sit at either)."""
    text = "START " + "x" * 1_000_000 + " END"
    body = json.dumps({"comment": {"body": text}}).encode()
    started = time.perf_counter()
    result = extract_content(body, JSON, ContentFields(("/comment/body",), max_body_bytes=2 << 20,
                                                        max_text_chars=1000))
    assert time.perf_counter() - started < 1.0
    assert isinstance(result, Extracted) and result.truncated
    assert len(result.texts[0].text) <= 1001
    assert result.texts[0].text.startswith("START") and result.texts[0].text.endswith("END")


def test_value_count_is_bounded() -> None:
    """A wildcard over a huge array collects at most max_values strings."""
    body = json.dumps({"tags": ["t"] * 100_000}).encode()
    result = extract_content(body, JSON, ContentFields(("/tags/*",), max_body_bytes=2 << 20, max_values=10))
    assert isinstance(result, Extracted) and len(result.texts) == 10 and result.truncated


def test_field_specs_are_validated() -> None:
    """A field that is neither a JSON pointer nor form:name fails at load, naming it."""
    with pytest.raises(ModerationConfigError, match=r"comment\.body"):
        ContentFields(("comment.body",))
    with pytest.raises(ModerationConfigError):
        ContentFields(())
