"""Link extraction, including defanged and obfuscated forms, and domain lists."""

from __future__ import annotations

import time

import pytest

from moderation.urls import DEFAULT_SHORTENERS, DomainList, extract_urls


@pytest.mark.parametrize(("text", "domain"), [
    ("visit hxxp://evil[.]com/win", "evil.com"),
    ("visit hxxps[:]//evil(.)com", "evil.com"),
    ("go to evil dot com now", "evil.com"),
    ("go to evil(dot)com now", "evil.com"),
    ("go to evil [.] xyz now", "evil.xyz"),
    ("go to evil . xyz now", "evil.xyz"),
    ("http: / / cheap{.}pills{.}ru", "cheap.pills.ru"),
    ("h**p://win.top/x", "win.top"),
])
def test_obfuscated_urls_are_found(text: str, domain: str) -> None:
    """Defanged links are de-obfuscated, found, and marked as obfuscated."""
    scan = extract_urls(text)
    assert [u.domain for u in scan.urls] == [domain]
    assert scan.urls[0].obfuscated and scan.obfuscations >= 1


@pytest.mark.parametrize(("text", "domains"), [
    ("see https://www.github.com/a/b, thanks", ["github.com"]),
    ("short: bit.ly/abc and t.co/x", ["bit.ly", "t.co"]),
    ("www.test.co.uk/path?x=1.", ["test.co.uk"]),
])
def test_plain_urls(text: str, domains: list[str]) -> None:
    """Scheme links, www. hosts and bare known-TLD domains are links; not obfuscated."""
    scan = extract_urls(text)
    assert [u.domain for u in scan.urls] == domains
    assert scan.obfuscations == 0 and not any(u.obfuscated for u in scan.urls)


@pytest.mark.parametrize("text", [
    "I was home. It was fun",  # sentence end + a word that is also a TLD
    "write to me@example.com",  # e-mail address
    "e.g. see file.txt or v1.2.3",  # abbreviations, files, versions
    "normal http:// alone",
])
def test_prose_is_not_a_link(text: str) -> None:
    """Sentences, e-mail addresses, file names and versions are not links."""
    assert extract_urls(text).urls == ()


def test_domain_list_matches_parents() -> None:
    """A listed domain covers its subdomains, not look-alike suffixes."""
    domains = DomainList(["Example.com", "www.bit.ly"])
    assert "example.com" in domains and "a.b.example.com" in domains and "bit.ly" in domains
    assert "notexample.com" not in domains and "com" not in domains
    assert "bit.ly" in DomainList(DEFAULT_SHORTENERS)


@pytest.mark.parametrize("text", ["a." * 500_000, "a" * 1_000_000, "http://" * 140_000, "x dot " * 160_000,
                                  "[.]" * 300_000])
def test_pathological_text_is_linear(text: str) -> None:
    """Regex-bomb shaped input (dots, long runs, repeated schemes) finishes fast."""
    started = time.perf_counter()
    scan = extract_urls(text)
    assert time.perf_counter() - started < 3.0
    assert len(scan.urls) <= 200
