"""URLs in text, including the defanged and obfuscated forms spammers use to slip past filters:
``hxxp://``, ``example[.]com``, ``example(dot)com``, ``example dot com``, ``example . com``,
``http: / / ...``. Domains are matched against shortener, block and allow lists.

Linear time by construction: the text is split on whitespace and each token is classified with
string operations and bounded patterns anchored at word boundaries (no nested quantifiers), so a
megabyte of ``a.a.a.a...`` costs what a megabyte of prose costs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["DEFAULT_SHORTENERS", "DomainList", "ExtractedUrl", "UrlScan", "extract_urls", "link_host"]

DEFAULT_SHORTENERS: frozenset[str] = frozenset({
    "bit.ly", "bitly.com", "tinyurl.com", "t.co", "goo.gl", "ow.ly", "is.gd", "buff.ly", "cutt.ly",
    "rebrand.ly", "tiny.cc", "shorturl.at", "rb.gy", "bl.ink", "t.ly", "s.id", "v.gd", "lnkd.in",
    "trib.al", "qr.ae", "adf.ly", "short.io", "snip.ly", "tr.im", "x.co", "soo.gd", "clck.ru", "u.to",
    "shorte.st", "ouo.io", "bc.vc", "cli.gs", "t2m.io", "tiny.one", "s.coop", "urlz.fr", "2.gp",
    "linktr.ee", "l.ead.me", "surl.li", "dub.sh", "kutt.it", "y2u.be", "ift.tt", "did.li", "han.gl",
})

# Top-level domains recognised in bare (scheme-less) domains. A closed list keeps "e.g." and
# "file.txt" from counting as links; scheme URLs and www. hosts need no list.
_TLDS: frozenset[str] = frozenset("""
com net org info biz io co me ly gl gd gy to cc tv xyz top club online site store shop app dev
link click live life world today news blog website space tech pro vip win bid loan men work
party review trade date racing download stream cam icu buzz fun monster rest bar cfd sbs
ru su cn uk de fr es it nl pl be ch at se no dk fi pt gr cz sk hu ro bg ua by kz tr il ir in pk
bd id my sg th vn ph jp kr tw hk au nz za ng ke eg ma br ar mx cl pe ve us ca eu asia mobi tk ml
ga cf gq ws am fm nu ly st ai gg im je
""".split())

_SCHEME_FIX = re.compile(r"\bh(?:xx|\*\*|tt|xt|tx)p(s?)\s{0,3}(?:\[:\]|\(:\)|:)\s{0,3}/\s{0,3}/\s{0,3}", re.IGNORECASE)
_BRACKET_DOT = re.compile(r"\s*(?:\[\s*(?:\.|dot)\s*\]|\(\s*(?:\.|dot)\s*\)|\{\s*(?:\.|dot)\s*\})\s*",
                          re.IGNORECASE)
# "example dot com", "example . com": rewritten only when the right-hand side is a known TLD.
# "home. It was" is prose, so a dot needs spaces on both sides to count as a spoken dot.
_SPOKEN_DOT = re.compile(r"\b([a-z0-9][a-z0-9-]{0,62}) (?:dot|\.) ([a-z]{2,10})\b", re.IGNORECASE)
_BRACKET_HINT = re.compile(r"[\[({] ?(?:\.|dot)", re.IGNORECASE)
_TRAILING = ".,;:!?)]}>'\"*"
_LEADING = "([{<'\"*"
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MAX_URLS = 200  # evidence and scoring need a count, not every one of a million links


@dataclass(frozen=True, slots=True)
class ExtractedUrl:
    url: str  # as found, after de-obfuscation
    domain: str  # lower-case host, without a leading "www."
    obfuscated: bool  # found only after undoing defanging


@dataclass(frozen=True, slots=True)
class UrlScan:
    urls: tuple[ExtractedUrl, ...]
    obfuscations: int  # defanging rewrites applied
    truncated: bool = False

    @property
    def domains(self) -> frozenset[str]:
        return frozenset(u.domain for u in self.urls)


class DomainList:
    """Domains matched exactly or as a parent: ``example.com`` covers ``a.b.example.com``."""

    __slots__ = ("_domains",)

    def __init__(self, domains: Iterable[str]) -> None:
        self._domains = frozenset(d.strip().lower().lstrip(".").removeprefix("www.") for d in domains if d.strip())

    def __contains__(self, domain: object) -> bool:
        if not isinstance(domain, str) or not self._domains:
            return False
        labels = domain.split(".")
        return any(".".join(labels[i:]) in self._domains for i in range(len(labels) - 1))

    def __len__(self) -> int:
        return len(self._domains)


def _valid_host(host: str, need_known_tld: bool) -> bool:
    labels = host.split(".")
    if len(labels) < 2 or len(host) > 253:
        return False
    if need_known_tld and labels[-1] not in _TLDS:
        return False
    if not labels[-1].isalpha() and not labels[-1].startswith("xn--"):
        return False
    return all(_LABEL.fullmatch(label) for label in labels)


def link_host(token: str) -> str | None:
    """The domain of a token that is a link (``https://a.b/c``, ``www.a.b``, ``a.com/x``), else None."""
    found = _host_of(token) if "." in token else None
    return None if found is None else found[0].removeprefix("www.")


def _host_of(token: str) -> tuple[str, bool] | None:
    """(host, had_scheme_or_www) for a token that is a link, else None."""
    lowered = token.lower()
    if "://" in lowered:
        scheme = lowered.split("://", 1)[0]
        if scheme not in ("http", "https", "ftp"):
            return None
        try:
            host = urlsplit(lowered).hostname or ""
        except ValueError:
            return None
        return (host, True) if _valid_host(host, need_known_tld=False) else None
    if "." not in lowered or "@" in lowered:  # e-mail addresses are not links
        return None
    host = re.split(r"[/:?#]", lowered, maxsplit=1)[0]
    if host.startswith("www."):
        return (host, True) if _valid_host(host, need_known_tld=False) else None
    return (host, False) if _valid_host(host, need_known_tld=True) else None


def _defang(text: str) -> tuple[str, int]:
    n_scheme = 0

    def scheme(match: re.Match[str]) -> str:
        nonlocal n_scheme
        fixed = "http" + (match.group(1) or "").lower() + "://"
        n_scheme += match.group(0).lower() != fixed  # plain "http://" is not an obfuscation
        return fixed

    # Cheap substring tests first: most texts have no defanged link, and the patterns need these.
    if ":" in text and "/" in text:
        text = _SCHEME_FIX.sub(scheme, text)
    n_bracket = 0
    if _BRACKET_HINT.search(text) is not None:
        text, n_bracket = _BRACKET_DOT.subn(".", text)
    n_spoken = 0

    def spoken(match: re.Match[str]) -> str:
        nonlocal n_spoken
        if match.group(2).lower() not in _TLDS:
            return match.group(0)
        n_spoken += 1
        return f"{match.group(1)}.{match.group(2)}"

    if " dot " in text.lower() or " . " in text:
        text = _SPOKEN_DOT.sub(spoken, text)
    return text, n_scheme + n_bracket + n_spoken


def _scan_tokens(text: str, obfuscated: bool, seen: dict[str, ExtractedUrl]) -> bool:
    for raw in [t for t in text.split() if "." in t]:  # no dot, no link: skips most words cheaply
        token = raw.strip(_TRAILING).lstrip(_LEADING)
        if len(token) < 4 or "." not in token:
            continue
        found = _host_of(token)
        if found is None:
            continue
        host = found[0].removeprefix("www.")
        if token not in seen:
            if len(seen) >= _MAX_URLS:
                return True
            seen[token] = ExtractedUrl(token, host, obfuscated)
    return False


def extract_urls(text: str) -> UrlScan:
    """Every link in ``text`` (normalized ``clean`` view), de-obfuscated, at most 200."""
    seen: dict[str, ExtractedUrl] = {}
    truncated = _scan_tokens(text, False, seen)
    defanged, obfuscations = _defang(text)
    if obfuscations and not truncated:
        plain = set(seen)
        extra: dict[str, ExtractedUrl] = {}
        truncated = _scan_tokens(defanged, True, extra)
        for token, url in extra.items():
            if token not in plain and url.domain not in {u.domain for u in seen.values()}:
                seen[token] = url
    return UrlScan(tuple(seen.values()), obfuscations, truncated)
