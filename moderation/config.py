"""Typed, immutable moderation settings, validated once when built (the policy loader maps its
``moderation:`` section onto these). A bad value fails at start with a message naming the field.

Symbols are the Rspamd idea: each check that fires adds a named symbol with a weight and its
evidence; the weights add up to the score; ordered thresholds pick the action. Every weight can
be overridden per route, and every symbol can be put in shadow mode (computed and reported,
not counted) to try a new bank or weight without risk."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from moderation.errors import ModerationConfigError
from moderation.urls import DEFAULT_SHORTENERS

__all__ = [
    "ACTIONS",
    "DEFAULT_WEIGHTS",
    "AccountSettings",
    "Action",
    "BodyErrorPolicy",
    "ContentFields",
    "KeywordBankSpec",
    "ModerationSettings",
    "NearDupSettings",
    "RegexBankSpec",
    "SymbolSettings",
    "Thresholds",
    "UrlSettings",
]

Action = Literal["allow", "flag", "hold", "challenge", "block"]
ACTIONS: tuple[Action, ...] = ("allow", "flag", "hold", "challenge", "block")
BodyErrorPolicy = Literal["reject", "pass"]

# Default weight of each built-in symbol (score points). With the default thresholds (flag 5,
# hold 10, block 15): the model alone flags or holds but never blocks; blocking takes a block-listed
# domain, or the model plus corroboration (a campaign, obfuscated links, homoglyphs...).
DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType({
    "model.spam": 12.0,  # x calibrated probability, emitted from p >= 0.3
    "model.spam_segment": 8.0,  # x probability of the worst segment of a long text (dilution)
    "url.count": 1.0,  # per link beyond UrlSettings.free_urls, at most 5 links counted
    "url.shortener": 3.0,
    "url.obfuscated": 4.0,  # defanged links: "hxxp", "[.]", "dot com"
    "url.homoglyph_domain": 6.0,  # a domain that only reads as Latin after confusable folding
    "url.blocked_domain": 15.0,
    "text.homoglyphs": 3.0,  # words mixing Latin letters with look-alikes from other scripts
    "text.invisible": 2.0,  # zero-width characters inside words
    "text.leetspeak": 1.0,  # two or more leet-folded words
    "text.spaced_letters": 1.5,  # "v-i-a-g-r-a"
    "mention.stuffing": 3.0,
    "hashtag.stuffing": 2.0,
    "campaign.near_duplicate": 6.0,  # near-copies from several *other* accounts in the window
    "account.repeat": 3.0,  # the same text again from the same account
    "account.velocity": 2.0,
    "account.new": 1.5,
})


def _finite(value: float, name: str) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ModerationConfigError(f"{name}: {value!r} is not a finite number")


def _positive(value: float, name: str) -> None:
    _finite(value, name)
    if value <= 0:
        raise ModerationConfigError(f"{name}: must be positive, got {value!r}")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Score thresholds; the action is the one with the highest threshold the score reaches.
    None turns an action off. Thresholds must differ (an ordering must exist)."""

    flag: float | None = 5.0
    hold: float | None = 10.0
    challenge: float | None = None
    block: float | None = 15.0

    def __post_init__(self) -> None:
        values = []
        for name in ("flag", "hold", "challenge", "block"):
            value = getattr(self, name)
            if value is not None:
                _finite(value, f"thresholds.{name}")
                values.append(value)
        if len(set(values)) != len(values):
            raise ModerationConfigError(f"thresholds: two actions share a threshold ({self})")

    def ordered(self) -> list[tuple[float, Action]]:
        pairs: list[tuple[float, Action]] = []
        for name in ("flag", "hold", "challenge", "block"):
            value = getattr(self, name)
            if value is not None:
                pairs.append((float(value), name))
        return sorted(pairs)

    def action_for(self, score: float) -> Action:
        chosen: Action = "allow"
        for threshold, action in self.ordered():
            if score >= threshold:
                chosen = action
        return chosen


@dataclass(frozen=True, slots=True)
class SymbolSettings:
    weight: float
    shadow: bool = False  # computed and reported, not added to the score

    def __post_init__(self) -> None:
        _finite(self.weight, "symbols.weight")


@dataclass(frozen=True, slots=True)
class ContentFields:
    """Where the text is. ``/comment/body`` is a JSON pointer (RFC 6901; ``*`` matches every
    array element or object member); ``form:body`` is a form field. Several per route."""

    fields: tuple[str, ...]
    max_body_bytes: int = 256 * 1024
    max_depth: int = 64  # JSON nesting refused beyond this (answered per on_body_error)
    max_text_chars: int = 20_000  # per field; longer texts keep head and tail
    max_values: int = 64  # strings collected across all fields

    def __post_init__(self) -> None:
        if not self.fields:
            raise ModerationConfigError("content: at least one field (JSON pointer or form:name)")
        for spec in self.fields:
            if not (spec.startswith("/") or (spec.startswith("form:") and len(spec) > 5)):
                raise ModerationConfigError(f"content: {spec!r} is neither a JSON pointer (/a/b) nor form:name")
        for name in ("max_body_bytes", "max_depth", "max_text_chars", "max_values"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ModerationConfigError(f"content.{name}: must be a positive integer")


@dataclass(frozen=True, slots=True)
class KeywordBankSpec:
    name: str
    keywords: tuple[str, ...]
    weight: float
    max_hits: int = 1  # the weight is added once per distinct hit, at most this many times
    shadow: bool = False

    def __post_init__(self) -> None:
        _finite(self.weight, f"keyword_banks.{self.name}.weight")
        if self.max_hits < 1:
            raise ModerationConfigError(f"keyword_banks.{self.name}.max_hits: must be at least 1")


@dataclass(frozen=True, slots=True)
class RegexBankSpec:
    name: str
    patterns: tuple[str, ...]
    weight: float
    max_hits: int = 1
    view: Literal["clean", "lower", "folded"] = "lower"
    case_sensitive: bool = False
    shadow: bool = False

    def __post_init__(self) -> None:
        _finite(self.weight, f"regex_banks.{self.name}.weight")
        if self.max_hits < 1:
            raise ModerationConfigError(f"regex_banks.{self.name}.max_hits: must be at least 1")


@dataclass(frozen=True, slots=True)
class UrlSettings:
    free_urls: int = 2  # links up to this many add nothing
    shorteners: frozenset[str] = DEFAULT_SHORTENERS
    blocked_domains: frozenset[str] = frozenset()
    allowed_domains: frozenset[str] = frozenset()  # never counted, never shortener/blocked


@dataclass(frozen=True, slots=True)
class NearDupSettings:
    """Campaign detection: MinHash signatures banded for LSH, one sliding window per band bucket
    in the shared store, whose members are the accounts that posted into it."""

    enabled: bool = True
    window: float = 3600.0
    min_accounts: int = 3  # other accounts with a near-copy in the window
    bands: int = 8
    # Per band: with 8 x 6, variants at similarity 0.8 share a bucket with p ~0.91 (0.6: ~0.32),
    # unrelated comments (similarity ~0.02-0.1, measured) with p < 1e-5 per pair. 8 x 4 gave 0.3
    # ~0.06 per pair: on a busy site, hundreds of posts an hour make chance buckets of 3 accounts.
    rows: int = 6
    min_chars: int = 40  # shorter texts ("thanks!") are everyone's, not a campaign

    def __post_init__(self) -> None:
        _positive(self.window, "near_duplicates.window")
        for name in ("min_accounts", "bands", "rows", "min_chars"):
            if getattr(self, name) < 1:
                raise ModerationConfigError(f"near_duplicates.{name}: must be at least 1")
        if self.bands * self.rows > 128:
            raise ModerationConfigError("near_duplicates: bands x rows must be at most 128")


@dataclass(frozen=True, slots=True)
class AccountSettings:
    repeat_window: float = 86_400.0
    repeat_min: int = 3  # this many posts of one text by one account (this one included)
    velocity_window: float = 60.0
    velocity_max: int = 5  # posts per window beyond which account.velocity fires
    new_account_seconds: float = 86_400.0
    created_claims: tuple[str, ...] = ("created_at", "account_created_at")  # epoch seconds or ISO 8601

    def __post_init__(self) -> None:
        for name in ("repeat_window", "velocity_window", "new_account_seconds"):
            _positive(getattr(self, name), f"accounts.{name}")
        if self.repeat_min < 2 or self.velocity_max < 1:
            raise ModerationConfigError("accounts: repeat_min must be >= 2 and velocity_max >= 1")


@dataclass(frozen=True, slots=True)
class ModerationSettings:
    """One route's content moderation. ``mode: shadow`` computes and reports (signal, log) what
    would have happened, enqueues nothing and always allows; use it when the rule is in shadow."""

    content: ContentFields
    thresholds: Thresholds = field(default_factory=Thresholds)
    symbols: Mapping[str, SymbolSettings] = field(default_factory=dict)  # overrides of DEFAULT_WEIGHTS
    mode: Literal["enforce", "shadow"] = "enforce"
    on_body_error: BodyErrorPolicy = "reject"  # reject: 4xx problem; pass: forward unscored
    keyword_banks: tuple[KeywordBankSpec, ...] = ()
    regex_banks: tuple[RegexBankSpec, ...] = ()
    urls: UrlSettings = field(default_factory=UrlSettings)
    max_mentions: int = 5
    max_hashtags: int = 8
    near_duplicates: NearDupSettings = field(default_factory=NearDupSettings)
    accounts: AccountSettings = field(default_factory=AccountSettings)
    model_threshold: float = 0.3  # model.spam is emitted from this probability up
    queue: str = "moderation"
    appeal_url: str = "/_tsgate/appeals"
    challenge_level: int = 2
    record_blocks: bool = True  # write blocks (state resolved) so an appeal can find them
    namespace: str = "mod"  # state-store key namespace

    def __post_init__(self) -> None:
        if self.mode not in ("enforce", "shadow"):
            raise ModerationConfigError(f"mode: {self.mode!r} is not enforce or shadow")
        if self.on_body_error not in ("reject", "pass"):
            raise ModerationConfigError(f"on_body_error: {self.on_body_error!r} is not reject or pass")
        banks = [b.name for b in self.keyword_banks] + [b.name for b in self.regex_banks]
        duplicates = sorted({n for n in banks if banks.count(n) > 1})
        if duplicates:
            raise ModerationConfigError(f"banks: duplicate names {duplicates}")
        if not 0 < self.model_threshold < 1:
            raise ModerationConfigError("model_threshold: must be between 0 and 1")
        known = set(DEFAULT_WEIGHTS) | {f"keyword.{n}" for n in banks} | {f"regex.{n}" for n in banks}
        unknown = sorted(set(self.symbols) - known)
        if unknown:
            raise ModerationConfigError(f"symbols: unknown symbol(s) {unknown}; known: {sorted(DEFAULT_WEIGHTS)}")
        object.__setattr__(self, "symbols", MappingProxyType(dict(self.symbols)))

    def symbol(self, name: str, default: float | None = None) -> SymbolSettings:
        """The effective weight and shadow flag of a symbol (override, else built-in default)."""
        override = self.symbols.get(name)
        if override is not None:
            return override
        return SymbolSettings(DEFAULT_WEIGHTS.get(name, default if default is not None else 0.0))
