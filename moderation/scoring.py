"""Content symbols and the verdict: named symbols with weights and evidence add up to a score;
ordered thresholds choose the action (the Rspamd model). Pure computation, no I/O: the guard
adds the state-based symbols (campaigns, repeats, velocity) and then calls ``verdict``.

Symbol names are stable ids (``url.shortener``, ``keyword.<bank>``): they appear in review
records, decision logs and policy overrides. ``PUBLIC_REASONS`` are the words a blocked client
is shown — categories, never weights or patterns, which would teach evasion."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from moderation.banks import BankMatch, CompiledBank, compile_keyword_bank, compile_regex_bank
from moderation.config import Action, ModerationSettings
from moderation.model import LinearModel
from moderation.normalize import Normalized
from moderation.urls import DomainList, UrlScan, extract_urls

__all__ = ["PUBLIC_REASONS", "ContentScorer", "Symbol", "Verdict", "verdict"]

_MENTION = re.compile(r"(?:^|(?<=\s))@[a-z0-9_.]{1,64}", re.IGNORECASE)
_HASHTAG = re.compile(r"(?:^|(?<=\s))#\w{1,100}")
_MAX_URLS_COUNTED = 5

PUBLIC_REASONS = {
    "model": "it reads like spam",
    "url": "its links",
    "text": "disguised text",
    "mention": "too many mentions",
    "hashtag": "too many hashtags",
    "campaign": "the same message is being posted by many accounts",
    "account": "posting patterns of this account",
    "keyword": "words that are not allowed here",
    "regex": "content that is not allowed here",
}


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    weight: float  # points added to the score (0 for evidence-only and shadow symbols' score)
    evidence: str
    shadow: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "weight": round(self.weight, 3), "evidence": self.evidence,
                **({"shadow": True} if self.shadow else {})}


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float  # sum of non-shadow symbol weights
    action: Action
    symbols: tuple[Symbol, ...]
    band: str  # low | medium | high: the risk band for the upstream assertion
    shadow_score: float  # the score had every shadow symbol counted
    shadow_action: Action
    model_version: str

    def public_reason(self) -> str:
        """The top two categories by weight, in words a client may read."""
        ranked = sorted((s for s in self.symbols if not s.shadow and s.weight > 0), key=lambda s: -s.weight)
        words: list[str] = []
        for symbol in ranked:
            word = PUBLIC_REASONS.get(symbol.name.split(".", 1)[0], "our content rules")
            if word not in words:
                words.append(word)
            if len(words) == 2:
                break
        return "; ".join(words) or "our content rules"

    def summary(self) -> str:
        parts = [f"{s.name}:{s.weight:.2f}{'(shadow)' if s.shadow else ''}"
                 for s in self.symbols if s.weight or s.shadow]
        return f"score={self.score:.2f} action={self.action} symbols={','.join(parts) or '-'}"


def verdict(symbols: Sequence[Symbol], settings: ModerationSettings, model_version: str = "") -> Verdict:
    score = sum(s.weight for s in symbols if not s.shadow)
    shadow_score = sum(s.weight for s in symbols)
    action = settings.thresholds.action_for(score)
    band = "high" if action in ("hold", "challenge", "block") else "medium" if action == "flag" else "low"
    return Verdict(round(score, 4), action, tuple(symbols), band, round(shadow_score, 4),
                   settings.thresholds.action_for(shadow_score), model_version)


class ContentScorer:
    """Everything that can be said about a text from the text alone. Built once per route
    (banks compiled at load: a bad pattern fails the policy, not a request)."""

    __slots__ = ("_allowed", "_blocked", "_keyword", "_regex", "_shorteners", "model", "settings")

    def __init__(self, settings: ModerationSettings, model: LinearModel | None) -> None:
        self.settings = settings
        self.model = model
        self._keyword: list[tuple[CompiledBank, float, int, bool]] = [
            (compile_keyword_bank(b.name, b.keywords), b.weight, b.max_hits, b.shadow) for b in settings.keyword_banks]
        self._regex: list[tuple[CompiledBank, float, int, bool, str]] = [
            (compile_regex_bank(b.name, b.patterns, case_sensitive=b.case_sensitive), b.weight, b.max_hits,
             b.shadow, b.view) for b in settings.regex_banks]
        self._allowed = DomainList(settings.urls.allowed_domains)
        self._blocked = DomainList(settings.urls.blocked_domains)
        self._shorteners = DomainList(settings.urls.shorteners)

    def _symbol(self, name: str, evidence: str, scale: float = 1.0) -> Symbol:
        config = self.settings.symbol(name)
        return Symbol(name, config.weight * scale, evidence, config.shadow)

    def score(self, views: Normalized) -> list[Symbol]:
        out: list[Symbol] = []
        self._model_symbols(views, out)
        self._url_symbols(views, out)
        self._text_symbols(views, out)
        self._bank_symbols(views, out)
        return out

    def _model_symbols(self, views: Normalized, out: list[Symbol]) -> None:
        if self.model is None or not views.lower:
            return
        result = self.model.score(views)
        if result.probability >= self.settings.model_threshold:
            out.append(self._symbol("model.spam", f"p={result.probability:.3f} model={self.model.version}",
                                    result.probability))
        # A long text whose worst segment is spam although the whole is not: diluted spam.
        if result.segment_probability >= 0.8 and result.segment_probability - result.probability >= 0.3:
            start, end = result.segment
            out.append(self._symbol("model.spam_segment",
                                    f"p={result.segment_probability:.3f} chars {start}-{end}: "
                                    f"{views.lower[max(0, start - 1):end - 1][:120]!r}",
                                    result.segment_probability))

    def _url_symbols(self, views: Normalized, out: list[Symbol]) -> None:
        scan: UrlScan = extract_urls(views.clean)
        if not scan.urls:
            return
        counted = [u for u in scan.urls if u.domain not in self._allowed]
        extra = min(len(counted), _MAX_URLS_COUNTED) - self.settings.urls.free_urls
        if extra > 0:
            domains = ", ".join(sorted({u.domain for u in counted})[:5])
            out.append(self._symbol("url.count", f"{len(counted)} links: {domains}", float(extra)))
        short = sorted({u.domain for u in counted if u.domain in self._shorteners})
        if short:
            out.append(self._symbol("url.shortener", ", ".join(short[:5])))
        hidden = sorted({u.url for u in counted if u.obfuscated})
        if hidden:
            out.append(self._symbol("url.obfuscated", f"{scan.obfuscations} rewrites: {', '.join(hidden[:3])}"))
        blocked = sorted({u.domain for u in scan.urls if u.domain in self._blocked})
        if blocked:
            out.append(self._symbol("url.blocked_domain", ", ".join(blocked[:5])))
        if views.unfolded != views.clean:  # a domain that only exists after folding look-alikes
            unfolded = views.unfolded.lower()
            spoofed = sorted(d for d in scan.domains if d not in unfolded)
            if spoofed:
                out.append(self._symbol("url.homoglyph_domain", f"reads as {', '.join(spoofed[:3])}"))

    def _text_symbols(self, views: Normalized, out: list[Symbol]) -> None:
        if views.mixed_script_words:
            shown = ", ".join(repr(w[:40]) for w in views.mixed_script_words[:3])
            out.append(self._symbol("text.homoglyphs", f"{views.confusables} look-alike characters in {shown}"))
        if views.invisible_in_words:
            out.append(self._symbol("text.invisible", f"{views.invisible_in_words} zero-width characters inside words"))
        if views.leet_words >= 2:
            out.append(self._symbol("text.leetspeak", f"{views.leet_words} leetspeak words"))
        if views.spaced_words:
            out.append(self._symbol("text.spaced_letters", f"{views.spaced_words} letter-spaced words"))
        mentions = len(_MENTION.findall(views.clean)) if "@" in views.clean else 0
        limit = self.settings.max_mentions
        if mentions > limit:
            out.append(self._symbol("mention.stuffing", f"{mentions} mentions (more than {limit})"))
        hashtags = len(_HASHTAG.findall(views.clean)) if "#" in views.clean else 0
        limit = self.settings.max_hashtags
        if hashtags > limit:
            out.append(self._symbol("hashtag.stuffing", f"{hashtags} hashtags (more than {limit})"))

    def _bank_symbols(self, views: Normalized, out: list[Symbol]) -> None:
        for bank, weight, max_hits, shadow in self._keyword:
            self._bank_symbol(f"keyword.{bank.name}", bank.match(views.folded), weight, max_hits, shadow, out)
        for rbank, weight, max_hits, shadow, view in self._regex:
            self._bank_symbol(f"regex.{rbank.name}", rbank.match(getattr(views, view)), weight, max_hits, shadow, out)

    def _bank_symbol(self, name: str, found: BankMatch | None, weight: float, max_hits: int, shadow: bool,
                     out: list[Symbol]) -> None:
        if found is None:
            return
        override = self.settings.symbols.get(name)
        if override is not None:
            weight, shadow = override.weight, override.shadow
        evidence = "matched " + ", ".join(repr(h[:80]) for h in found.hits)
        out.append(Symbol(name, weight * min(found.count, max_hits), evidence, shadow))
