"""The policy file's model. Validated once at load, immutable after (``frozen=True``); unknown
fields are errors (``extra="forbid"``), so a typo never silently disables a defence."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from gateway.core.errors import ConfigError

__all__ = [
    "AuthConfig",
    "CaptchaConfig",
    "Duration",
    "ExternalAuthenticator",
    "IpListConfig",
    "LogConfig",
    "Match",
    "Policy",
    "RequestConfig",
    "RouteCaptchaConfig",
    "Rule",
    "Size",
    "UpstreamConfig",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a duration like '500ms', '2s' or '1m'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a duration (use e.g. '500ms', '2s', '1m')")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def _size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a size like '64KiB' or '1MiB'")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a size (use e.g. '64KiB', '1MiB')")
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


def _cidr(value: Any) -> str:
    try:
        return str(ipaddress.ip_network(str(value), strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR") from None


def _percent(value: Any) -> Any:
    """'10%', '12.5 %' or a plain number of percent."""
    if isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage like '10%'") from None
    return value


Duration = Annotated[float, BeforeValidator(_duration)]
Size = Annotated[int, BeforeValidator(_size)]
Cidr = Annotated[str, BeforeValidator(_cidr)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamConfig(Strict):
    url: str = Field(description="Base URL of the backend, e.g. http://127.0.0.1:8000 (http only).")
    connect_timeout: Duration = Field(1.0, description="Seconds to open a connection (e.g. '1s').")
    read_timeout: Duration = Field(30.0, description="Seconds to wait for response headers or body data.")
    max_connections: int = Field(512, ge=1, le=65535, description="Pooled connections at most.")
    host_header: Literal["upstream", "preserve"] = Field(
        "upstream",
        description="'upstream' sends the upstream's own host (safe when the backend builds URLs from "
        "Host); 'preserve' forwards the client's Host. The client's Host is always in X-Forwarded-Host.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{value!r} must be an http:// URL with a host (TLS: terminate in front)")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError("the upstream URL takes no path or query; paths are forwarded as received")
        return value.rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc


class PasswordConfig(Strict):
    profile: Literal["owasp", "rfc9106-low-memory"] = Field(
        "owasp",
        description="argon2id parameters: 'owasp' (t=2, 19 MiB, p=1) or 'rfc9106-low-memory' (t=3, 64 MiB, p=4).")
    min_length: int = Field(15, ge=8, le=64, description="NIST SP 800-63B-4: 15 for single-factor passwords.")
    max_length: int = Field(256, ge=64, le=1024, description="A generous maximum (NIST: at least 64).")
    max_concurrency: int = Field(2, ge=1, le=64, description="argon2 hashes computed at once (memory cap).")
    max_queue: int = Field(64, ge=1, le=10000, description="Hashes waiting beyond this get 503 + Retry-After.")


class LoginConfig(Strict):
    challenge_after: int = Field(5, ge=1, le=99, description="Failures per login name before a Challenge.")
    lock_after: int = Field(20, ge=2, le=99, description="Failures per login name before a temporary lock.")
    lock_for: Duration = Field(900.0, description="How long a lock lasts, and the failure-count window.")
    per_ip_failures: int = Field(50, ge=1, description="Failures per client IP in the window before 429.")
    stuffing_distinct_logins: int = Field(
        10, ge=2, description="Distinct login names from one IP (or /24, /64) in the window: credential stuffing.")


class RefreshCookieConfig(Strict):
    enabled: bool = Field(True, description="Also deliver the refresh token as an HttpOnly cookie.")
    name: str = Field("tsgate_rt", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    secure: bool = Field(True, description="Send the cookie only over HTTPS (turn off only for local demos).")
    same_site: Literal["strict", "lax"] = "strict"


class ExternalAuthenticator(Strict):
    """Verifies a backend's own JWTs and passes the request through unchanged."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Used in principal ids: ext:NAME:SUB.")
    header: str = Field("authorization", description="Header carrying the credential.")
    scheme: str = Field("Bearer", description="Scheme before the token, e.g. 'Token' for 'Token <jwt>'; '' for none.")
    algorithms: list[Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384",
                             "EdDSA"]] = Field(description="Accepted algorithms (explicit allow-list).")
    secret_env: str | None = Field(None, description="Environment variable holding the HMAC secret (HS*).")
    public_key_file: str | None = Field(None, description="PEM public key file (RS*/PS*/ES*/EdDSA).")
    jwks_url: str | None = Field(None, description="JWKS URL, cached; re-fetched on an unknown kid (rate-bound).")
    issuer: str | None = None
    audience: str | None = None
    subject_claim: str = "sub"
    roles_claim: str | None = Field(None, description="Claim holding a list (or space-separated string) of roles.")
    leeway: Duration = 30.0

    @model_validator(mode="after")
    def _one_key_source(self) -> ExternalAuthenticator:
        sources = [s for s in (self.secret_env, self.public_key_file, self.jwks_url) if s]
        if len(sources) != 1:
            raise ValueError("set exactly one of secret_env, public_key_file, jwks_url")
        hmac = any(a.startswith("HS") for a in self.algorithms)
        if hmac and (not self.secret_env or len(self.algorithms) != sum(a.startswith("HS") for a in self.algorithms)):
            raise ValueError("HS* algorithms need secret_env and cannot be mixed with public-key algorithms")
        if self.secret_env and not hmac:
            raise ValueError("secret_env is for HS* algorithms only")
        return self


class AuthConfig(Strict):
    issuer: str = Field("tsgate", description="iss of tokens tsgate issues.")
    audience: str = Field("tsgate", description="aud of access tokens tsgate issues.")
    access_ttl: Duration = Field(600.0, description="Access token lifetime (10 minutes).")
    refresh_ttl: Duration = Field(30 * 86400.0, description="Refresh token (session family) lifetime.")
    refresh_grace: Duration = Field(
        10.0, description="Concurrent refreshes of one token within this window get the same successor.")
    upstream_audience: str = Field("upstream", description="aud of the X-Tsgate-Assertion sent upstream.")
    assertion: bool = Field(True, description="Send X-Tsgate-Assertion (a 60 s JWT) with identity.")
    revocation_fail: Literal["open", "closed"] = Field(
        "open", description="If the state store cannot be asked about revocation: 'open' trusts the "
        "signature (logged-out tokens live up to access_ttl during an outage), 'closed' answers 503.")
    password: PasswordConfig = Field(default_factory=lambda: PasswordConfig())
    login: LoginConfig = Field(default_factory=lambda: LoginConfig())
    refresh_cookie: RefreshCookieConfig = Field(default_factory=lambda: RefreshCookieConfig())
    external: list[ExternalAuthenticator] = Field(default_factory=list)
    registration: bool = Field(True, description="Allow POST {prefix}auth/register.")


def _rate(value: Any) -> str:
    from limits import parse_many

    try:
        items = parse_many(str(value))
    except ValueError:
        items = []
    if not items:
        raise ValueError(f"{value!r} is not a rate (use e.g. '5/minute', '100/hour; 1000/day')")
    return str(value)


def _key_part(value: Any) -> str:
    from ratelimit.spec import parse_key_part

    return parse_key_part(str(value))


Rate = Annotated[str, BeforeValidator(_rate)]
KeyPart = Annotated[str, BeforeValidator(_key_part)]


class LimitExemptions(Strict):
    roles: list[str] = Field(default_factory=list, description="Principals with any of these roles skip the limit.")
    cidrs: list[Cidr] = Field(default_factory=list, description="Clients in these networks skip the limit.")


class LimitConfig(Strict):
    """One rate limit on a rule: exact and shared through the state store (`limits` library)."""

    name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
                             description="Used in headers, metrics and logs; default '<rule id>.<index>'.")
    rate: Rate = Field(description="One or more windows: '5/minute', '100/hour; 1000/day'.")
    key: KeyPart | list[KeyPart] = Field(
        "user_or_ip", description="ip (IPv6 by /64), user, user_or_ip, route, path:NAME, header:NAME, "
        "body:/json/pointer, claim:NAME — or a list of them, combined.")
    strategy: Literal["sliding-window", "moving-window", "fixed-window"] = Field(
        "sliding-window", description="limits' algorithm; sliding-window is exact enough and Cluster safe.")
    cost: int = Field(1, ge=1, le=1_000_000, description="Units one request spends.")
    exempt: LimitExemptions = Field(default_factory=lambda: LimitExemptions())
    on_exceed: Literal["deny", "challenge", "shadow"] = Field(
        "deny", description="deny: 429; challenge: a CAPTCHA challenge; shadow: record only.")
    fail: Literal["open", "closed"] = Field(
        "open", description="When the store cannot answer in time: open lets the request through, closed answers 503.")
    count_on: list[int] = Field(
        default_factory=list, description="Count only responses with these statuses (e.g. [401] for failed "
        "logins), charged after the response; empty: every request counts.")

    @field_validator("count_on")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        for status in value:
            if not 100 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP status")
        return value


class RateLimitSettings(Strict):
    timeout: Duration = Field(0.05, description="Bound on each store call (tens of ms).")
    breaker_cooldown: Duration = Field(5.0, description="After 3 straight store failures, skip the store this long.")
    max_memory_keys: int = Field(1_000_000, ge=1000, description="memory://: live keys at most; new keys past it "
                                 "get the limit's fail mode (a live key is never evicted).")


class RequestConfig(Strict):
    max_body_bytes: Size = Field(1 << 20, description="Bodies a guard buffers; past it: 413.")
    max_header_bytes: Size = Field(32 << 10, description="Request line and headers together; past it: 431.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="If set, requests whose Host is not listed get 400 (a leading '*.' matches subdomains).",
    )


class IpListConfig(Strict):
    allow: list[Cidr] = Field(default_factory=list, description="If set, only these CIDRs pass.")
    deny: list[Cidr] = Field(default_factory=list, description="These CIDRs are refused (checked first).")


class Match(Strict):
    methods: list[str] | None = Field(None, description="HTTP methods; omitted means any.")
    path: str = Field(description="Path template: literal segments, {param} (one segment), '/**' at the end.")

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        upper = [m.upper() for m in value]
        for method in upper:
            if method not in METHODS:
                raise ValueError(f"{method!r} is not one of {', '.join(METHODS)}")
        return upper

    @field_validator("path")
    @classmethod
    def _template(cls, value: str) -> str:
        from policies.matcher import parse_template

        parse_template(value)  # raises ValueError with the reason
        return value


class CaptchaLevel(Strict):
    """One proof-of-work difficulty: about ``counter`` attempts of ``cost`` KDF iterations each."""

    cost: int = Field(ge=1, le=1_000_000, description="KDF iterations per attempt (PBKDF2 rounds).")
    counter: int = Field(ge=1, le=1_000_000, description="The answer is at a random counter in "
                         "[counter/2, counter]: a solver tries about 0.75 x counter attempts.")


class CaptchaEscalation(Strict):
    strikes: int = Field(5, ge=1, le=1000, description="Strikes (failed, replayed or tampered solutions, foreign "
                         "or tampered clearances, spent budgets) before the ladder moves past challenges.")
    window: Duration = Field(900.0, description="How long strikes count (and how long a deny lasts).")
    then: Literal["deny", "hold"] = Field("deny", description="deny: 403 captcha.denied with Retry-After; "
                                          "hold: 202, the request is held for review.")
    queue: str = Field("captcha", pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="Review queue for hold.")


class CaptchaCookie(Strict):
    name: str = Field("tsgate_clearance", pattern=r"^[A-Za-z0-9_-]{1,48}$",
                      description="Cookie name prefix; the scope is appended (tsgate_clearance_<scope>).")
    secure: bool = Field(True, description="Send the cookie only over HTTPS (turn off only for local demos).")
    same_site: Literal["strict", "lax"] = Field("lax", description="lax keeps clearances across links from "
                                                "other sites; strict drops them on cross-site navigation.")


class CaptchaProviderConfig(Strict):
    """A third-party CAPTCHA as a further rung: its token, posted to {prefix}captcha/verify, buys a
    clearance at ``level``."""

    kind: Literal["turnstile", "hcaptcha"]
    site_key: str = Field(min_length=1, max_length=128)
    secret_env: str = Field(description="Environment variable holding the provider's secret key.")
    verify_url: str | None = Field(None, description="siteverify URL; default: the provider's documented one.")
    timeout: Duration = Field(3.0, description="Bound on one siteverify call.")
    level: int = Field(3, ge=1, description="Clearance level a solved token is worth.")
    hostname: str | None = Field(None, description="If set, the hostname the provider reports must match.")

    @field_validator("verify_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{value!r} must be an http(s) URL")
        return value


def _default_levels() -> list[Any]:
    """Plain mappings (validated into CaptchaLevel), so the generated reference can print them."""
    from captcha.settings import DEFAULT_LEVELS

    return [{"cost": level.cost, "counter": level.counter} for level in DEFAULT_LEVELS]


class CaptchaConfig(Strict):
    algorithm: Literal["PBKDF2/SHA-256", "PBKDF2/SHA-384", "PBKDF2/SHA-512"] = Field(
        "PBKDF2/SHA-256", description="ALTCHA v2 key derivation (WebCrypto can do all three).")
    levels: list[CaptchaLevel] = Field(default_factory=_default_levels, validate_default=True, min_length=1,
                                       max_length=10,
                                       description="Difficulty levels 1..N (see docs/performance.md).")
    default_level: int = Field(2, ge=1, description="Level for challenges of rules without their own.")
    challenge_ttl: Duration = Field(300.0, description="A challenge's expiresAt; a solution is accepted once.")
    clearance_ttl: Duration = Field(1800.0, description="How long a clearance is good for.")
    clearance_uses: int = Field(0, ge=0, description="Requests one clearance may satisfy (0: unlimited).")
    cookie: CaptchaCookie = Field(default_factory=lambda: CaptchaCookie())
    escalate: CaptchaEscalation = Field(default_factory=lambda: CaptchaEscalation())
    issue_per_minute: int = Field(60, ge=1, description="Challenges one client IP may fetch per minute.")
    verify_per_minute: int = Field(30, ge=1, description="Verifications one client IP may post per minute.")
    providers: list[CaptchaProviderConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _levels_exist(self) -> CaptchaConfig:
        if self.default_level > len(self.levels):
            raise ValueError(f"default_level {self.default_level} is above the {len(self.levels)} levels")
        kinds = [p.kind for p in self.providers]
        for index, provider in enumerate(self.providers):
            if provider.level > len(self.levels):
                raise ValueError(f"providers[{index}].level {provider.level} is above the {len(self.levels)} levels")
            if kinds.count(provider.kind) > 1:
                raise ValueError(f"providers[{index}].kind {provider.kind!r} is configured twice")
        return self


def _captcha_shorthand(value: Any) -> Any:
    if value == "always":
        return {"always": True}
    if isinstance(value, str):
        raise ValueError(f"{value!r}: use 'always' or a mapping like {{after_failures: 3}}")
    return value


class RouteCaptchaConfig(Strict):
    """When this rule challenges: exactly one of always, after_failures, on_limit, risk_at_least."""

    always: bool = Field(False, description="Every request needs a clearance.")
    after_failures: int | None = Field(None, ge=1, le=1000, description="After N failure answers to this "
                                       "principal (failure_statuses) within failure_window.")
    on_limit: str | None = Field(None, description="When the named limit (on_exceed: shadow or challenge) is "
                                 "exceeded.")
    risk_at_least: Literal["medium", "high"] | None = Field(None, description="When the request's risk band "
                                                            "(from its signals) is at least this.")
    level: int | None = Field(None, ge=1, description="Base level (default: captcha.default_level).")
    scope: str | None = Field(None, description="Route group a clearance is good for (default: the rule id).")
    failure_statuses: list[int] = Field(default_factory=lambda: [401, 403],
                                        description="Statuses that count as failures for after_failures.")
    failure_window: Duration = Field(900.0, description="How long failures count.")
    clearance_ttl: Duration | None = Field(None, description="Override captcha.clearance_ttl.")
    uses: int | None = Field(None, ge=0, description="Override captcha.clearance_uses (0: unlimited).")
    escalate: CaptchaEscalation | None = Field(None, description="Override captcha.escalate.")

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str | None) -> str | None:
        if value is not None and not RULE_ID.match(value):
            raise ValueError(f"{value!r} must be lower-case letters, digits, '_', '.', '-' (max 64)")
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> RouteCaptchaConfig:
        triggers = [self.always, self.after_failures is not None, self.on_limit is not None,
                    self.risk_at_least is not None]
        if sum(triggers) != 1:
            raise ValueError("set exactly one of always, after_failures, on_limit, risk_at_least")
        return self


class ModerationThresholds(Strict):
    """Score thresholds; the action is the highest one the score reaches (null turns it off)."""

    flag: float | None = Field(5.0, description="Forward, and put the item in the review queue.")
    hold: float | None = Field(10.0, description="Do not forward; 202 and queue (durable before the answer).")
    challenge: float | None = Field(None, description="Ask for a CAPTCHA (proof of work).")
    block: float | None = Field(15.0, description="403 with the reason and how to appeal.")


class ModerationSymbol(Strict):
    weight: float = Field(description="Score points the symbol adds when it fires.")
    shadow: bool = Field(False, description="Computed and reported, not counted.")


class KeywordBank(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    keywords: list[str] = Field(min_length=1, description="Matched on the normalized, folded text (whole words).")
    weight: float
    max_hits: int = Field(1, ge=1, description="The weight is added once per distinct hit, at most this often.")
    shadow: bool = False


class RegexBank(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    patterns: list[str] = Field(min_length=1, description="RE2 syntax (linear time; no backreferences).")
    weight: float
    max_hits: int = Field(1, ge=1)
    view: Literal["clean", "lower", "folded"] = Field("lower", description="Which normalized view is searched.")
    case_sensitive: bool = False
    shadow: bool = False


class ModerationUrls(Strict):
    free_urls: int = Field(2, ge=0, description="Links up to this many add nothing.")
    blocked_domains: list[str] = Field(default_factory=list)
    allowed_domains: list[str] = Field(default_factory=list, description="Never counted or scored.")
    extra_shorteners: list[str] = Field(default_factory=list, description="Added to the built-in list.")


class ModerationNearDup(Strict):
    enabled: bool = True
    window: Duration = Field(3600.0, description="How long a post's signature is remembered.")
    min_accounts: int = Field(3, ge=1, description="Other accounts with a near-copy that make a campaign.")


class ModerationDefaults(Strict):
    """Policy-wide content moderation settings; routes opt in with `moderation: {content: [...]}`."""

    model: str = Field("default", description="'default' (the shipped SMS-trained model) or a model file "
                       "written by `tsgate moderation train`.")
    thresholds: ModerationThresholds = Field(default_factory=lambda: ModerationThresholds())
    symbols: dict[str, ModerationSymbol] = Field(default_factory=dict, description="Per-symbol weight overrides.")
    keyword_banks: list[KeywordBank] = Field(default_factory=list)
    regex_banks: list[RegexBank] = Field(default_factory=list)
    urls: ModerationUrls = Field(default_factory=lambda: ModerationUrls())
    near_duplicates: ModerationNearDup = Field(default_factory=lambda: ModerationNearDup())
    max_mentions: int = Field(5, ge=1)
    max_hashtags: int = Field(8, ge=1)
    on_body_error: Literal["reject", "pass"] = Field(
        "reject", description="A body that cannot be read: reject (4xx problem+json) or pass (forward unscored).")
    challenge_level: int = Field(2, ge=1)


class RouteModeration(Strict):
    content: list[str] = Field(min_length=1, description="Where the text is: JSON pointers (/comment/body, "
                               "/items/*/text) or form fields (form:body).")
    thresholds: ModerationThresholds | None = Field(None, description="Override the policy's thresholds.")
    on_body_error: Literal["reject", "pass"] | None = None


class ReviewWebhook(Strict):
    """Where remove and ban decisions are announced to the backend (HMAC-SHA256 signed JSON)."""

    url: str = Field(description="http(s) URL the backend listens on for moderation events.")
    secret_env: str = Field(description="Environment variable holding the HMAC-SHA256 signing secret.")
    attempts: int = Field(4, ge=1, le=10, description="Deliveries tried before the event is dead-lettered.")
    backoff: Duration = Field(1.0, description="First retry delay; doubled after each failure.")
    timeout: Duration = Field(5.0, description="Bound on one delivery.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value


class ReviewForward(Strict):
    """Retries of an approved held request the backend did not take (down, timeout, 5xx)."""

    attempts: int = Field(8, ge=1, le=20, description="Forwards tried before the approval's delivery is "
                          "dead-lettered (the decision stands either way).")
    backoff: Duration = Field(2.0, description="First retry delay; doubled after each failure.")
    timeout: Duration = Field(10.0, description="Bound on one forward.")


class ReviewConfig(Strict):
    """The review queue and moderator console (on the admin listener)."""

    lease: Duration = Field(600.0, description="How long a claimed item stays with its moderator.")
    webhook: ReviewWebhook | None = Field(None, description="Outgoing webhook for remove and ban decisions.")
    forward: ReviewForward = Field(default_factory=ReviewForward,
                                   description="Retrying approved held requests the backend did not take.")
    appeal_limit: int = Field(5, ge=1, description="Appeals per principal (and per IP) per appeal_window.")
    appeal_window: Duration = Field(3600.0, description="The appeal rate-limit window.")


class FollowersConfig(Strict):
    """Fake-follower detection: what to do with what the detectors find (routes opt in with `follow:`)."""

    mode: Literal["enforce", "shadow"] = Field("enforce", description="shadow: detect, signal and queue for "
                                               "review (marked shadow) but never deny, challenge or label.")
    label: str = Field("fake_follower", pattern=r"^[A-Za-z0-9_-]{1,32}$",
                       description="Account label (with a TTL) that other guards and moderators read.")
    label_ttl: Duration = Field(30 * 86400.0, description="How long an account label lasts.")
    on_label: Literal["deny", "challenge", "none"] = Field("deny", description="A follow from a labelled account.")
    challenge_at: float | None = Field(2.5, gt=0, description="Challenge follows from accounts whose risk score "
                                       "reaches this (0-4); null: off.")
    deny_at: float | None = Field(None, gt=0, description="Deny follows from accounts whose risk reaches this.")
    challenge_level: int = Field(2, ge=1, le=5)
    review_targets: bool = Field(True, description="Put flagged targets (suspected purchased followers) in review.")
    review_cohorts: bool = Field(True, description="Put each lockstep cohort in review as one item.")
    event_log_max: int = Field(1_000_000, ge=1000, description="Follow events kept (Redis stream MAXLEN ~).")


class RouteFollow(Strict):
    target: str = Field("path:username", description="Where the followed account is: path:<parameter> or "
                        "body:/json/pointer.")
    action: Literal["follow", "unfollow"] = "follow"


class Rule(Strict):
    id: str = Field(description="Stable rule id, used in logs, metrics and decision ids' records.")
    match: Match = Field(description="Which requests the rule covers.")
    mode: Literal["enforce", "shadow", "off"] = Field(
        "enforce", description="enforce; shadow (record what would happen, allow); off (rule ignored)."
    )
    rollout: Annotated[float, BeforeValidator(_percent)] = Field(
        100.0, ge=0, le=100, description="Staged rollout: enforce this rule for a stable share of principals "
        "(e.g. '10%'; by user id, else client IP); for everyone else it runs in shadow mode.")
    ip: IpListConfig | None = Field(None, description="IP allow/deny lists for this rule.")
    auth: Literal["required", "optional", "none"] = Field(
        "optional", description="required: 401 without a valid token; optional: verify if present; none: ignore.")
    roles: list[str] = Field(default_factory=list, description="Any of these roles is required (403 otherwise).")
    limits: list[LimitConfig] = Field(default_factory=list, description="Rate limits on this rule.")
    moderation: RouteModeration | None = Field(None, description="Score this route's content for spam.")
    follow: RouteFollow | None = Field(None, description="This route follows/unfollows an account: record the "
                                       "events for fake-follower detection and check the actor's label and risk.")
    captcha: Annotated[RouteCaptchaConfig | None, BeforeValidator(_captcha_shorthand)] = Field(
        None, description="'always' or {after_failures: N} | {on_limit: NAME} | {risk_at_least: BAND}, "
        "with optional level, scope, uses, clearance_ttl, escalate.")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not RULE_ID.match(value):
            raise ValueError(f"{value!r} must be lower-case letters, digits, '_', '.', '-' (max 64)")
        return value


class LogConfig(Strict):
    decisions: Literal["all", "non_allow", "none"] = Field(
        "all", description="Which decisions get a JSON log line on stderr."
    )
    decision_log: str | None = Field(None, description="Also append every decision to this JSONL file.")
    decision_log_max_bytes: Size = Field(100 << 20, description="Rotate the JSONL file at this size.")
    decision_log_backups: int = Field(5, ge=0, le=1000)
    replay_headers: list[str] = Field(
        default_factory=lambda: ["user-agent", "content-type"],
        description="Request headers copied into decision records (for `tsgate policy replay`); headers that "
        "limit keys use (`header:NAME`) are added automatically. Never list credentials.")
    replay_content: bool = Field(False, description="Also record request bodies that guards read (base64), so "
                                 "replay can re-run content rules. Off by default: bodies are user data.")
    replay_content_max_bytes: Size = Field(4096, description="Record at most this much of a body.")

    @field_validator("replay_headers")
    @classmethod
    def _no_credentials(cls, value: list[str]) -> list[str]:
        lowered = [v.lower() for v in value]
        secret = sorted(set(lowered) & {"authorization", "cookie", "proxy-authorization", "tsgate-clearance"})
        if secret:
            raise ValueError(f"{secret} carry credentials and are never recorded")
        return lowered


class Policy(Strict):
    version: Literal[1] = Field(1, description="Policy format version.")
    upstream: UpstreamConfig = Field(description="The backend tsgate protects.")
    state: str = Field("memory://", description="memory:// (one process), redis://host:port/db (shared by "
                       "processes and hosts) or redis+cluster://host:port,host:port (Redis Cluster).")
    database: str = Field("sqlite+aiosqlite:///tsgate.db", description="Durable records (SQLAlchemy URL).")
    trusted_proxies: list[Cidr] = Field(
        default_factory=list, description="Peers whose X-Forwarded-For is believed (right-most untrusted hop)."
    )
    prefix: str = Field("/_tsgate/", description="Reserved path prefix for tsgate's own endpoints.")
    default: Literal["allow", "deny"] = Field("allow", description="What happens when no rule matches.")
    request: RequestConfig = Field(default_factory=lambda: RequestConfig(), description="Request size limits.")
    ip: IpListConfig | None = Field(None, description="IP lists applied before every rule.")
    auth: AuthConfig | None = Field(None, description="Identity: accounts, tokens, external authenticators.")
    ratelimit: RateLimitSettings = Field(default_factory=lambda: RateLimitSettings(),
                                         description="Rate-limit store behaviour.")
    limits: list[LimitConfig] = Field(default_factory=list, description="Rate limits applied before every rule.")
    followers: FollowersConfig = Field(default_factory=lambda: FollowersConfig(),
                                       description="Fake-follower detection settings (routes opt in with follow:).")
    moderation: ModerationDefaults = Field(default_factory=lambda: ModerationDefaults(),
                                           description="Content moderation defaults (routes opt in).")
    captcha: CaptchaConfig = Field(default_factory=lambda: CaptchaConfig(),
                                   description="Proof-of-work challenges, clearances and the escalation ladder.")
    review: ReviewConfig = Field(default_factory=lambda: ReviewConfig(),
                                 description="Review queue: lease time, outgoing webhook, appeal limits.")
    routes: list[Rule] = Field(default_factory=list, description="Rules; the first match in file order wins.")
    log: LogConfig = Field(default_factory=lambda: LogConfig(), description="Decision logging.")

    def named_limits(self, rule: Rule | None = None) -> list[tuple[str, LimitConfig]]:
        """The policy-wide limits, then ``rule``'s, each with its effective name (its key
        namespace): the configured name, else 'global.<i>' / '<rule id>.<i>'."""
        named = [(cfg.name or f"global.{i}", cfg) for i, cfg in enumerate(self.limits)]
        if rule is not None:
            named += [(cfg.name or f"{rule.id}.{i}", cfg) for i, cfg in enumerate(rule.limits)]
        return named

    def limit_names(self) -> list[tuple[str, LimitConfig]]:
        """Every limit with its effective name, in policy order."""
        named = self.named_limits()
        for rule in self.routes:
            named += self.named_limits(rule)[len(self.limits):]
        return named

    @model_validator(mode="after")
    def _unique_limit_names(self) -> Policy:
        seen: set[str] = set()
        for name, _ in self.limit_names():
            if name in seen:  # one name is one key namespace: two limits must never share it
                raise ValueError(f"limit name {name!r} is used twice")
            seen.add(name)
        return self

    @model_validator(mode="after")
    def _moderation_settings(self) -> Policy:
        # Build each route's settings once here so a bad bank, pattern or symbol is refused at load
        # with the route named (the feature's own checks: RE2 compiles, known symbols, ...).
        from policies.features import moderation_settings  # features imports this module

        for index, rule in enumerate(self.routes):
            if rule.moderation is None:
                continue
            try:
                moderation_settings(self.moderation, rule, check_patterns=True)
            except (ValueError, ConfigError) as exc:
                raise ValueError(f"routes[{index}].moderation (rule {rule.id!r}): {exc}") from None
        return self

    @model_validator(mode="after")
    def _follow_targets(self) -> Policy:
        for index, rule in enumerate(self.routes):
            if rule.follow is None:
                continue
            where, _, name = rule.follow.target.partition(":")
            if not ((where == "path" and name.isidentifier()) or (where == "body" and name.startswith("/"))):
                raise ValueError(f"routes[{index}].follow.target: {rule.follow.target!r} must be path:<parameter> "
                                 "or body:/json/pointer")
            if where == "path" and "{" + name + "}" not in rule.match.path:
                raise ValueError(f"routes[{index}].follow.target: the path has no {{{name}}} parameter")
        if self.followers.deny_at is not None and self.followers.challenge_at is not None and (
                self.followers.deny_at < self.followers.challenge_at):
            raise ValueError("followers.deny_at: must not be below followers.challenge_at")
        return self

    @model_validator(mode="after")
    def _captcha_refs(self) -> Policy:
        levels = len(self.captcha.levels)
        for index, rule in enumerate(self.routes):
            cfg = rule.captcha
            if cfg is None:
                continue
            where = f"routes[{index}].captcha"
            if cfg.level is not None and cfg.level > levels:
                raise ValueError(f"{where}.level: {cfg.level} is above the {levels} levels of captcha.levels")
            if cfg.on_limit is not None:
                named = dict(self.named_limits(rule))
                limit = named.get(cfg.on_limit)
                if limit is None:
                    raise ValueError(f"{where}.on_limit: no limit named {cfg.on_limit!r} applies to rule {rule.id!r}")
                if limit.on_exceed == "deny":
                    raise ValueError(f"{where}.on_limit: limit {cfg.on_limit!r} has on_exceed: deny, so it refuses "
                                     "before any challenge; set on_exceed: shadow or challenge")
        return self

    @model_validator(mode="after")
    def _auth_needed(self) -> Policy:
        if self.auth is None:
            for index, rule in enumerate(self.routes):
                if rule.auth == "required" or rule.roles:
                    raise ValueError(f"routes[{index}] ({rule.id}) requires sign-in or roles, but the policy has "
                                     "no auth: section")
        return self

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9_.-]+/", value):
            raise ValueError("the prefix must look like '/_tsgate/'")
        return value

    @field_validator("state")
    @classmethod
    def _state(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in ("memory", "redis", "rediss", "unix", "redis+cluster"):
            raise ValueError(f"{value!r}: state must be memory://, redis://host:port/db, rediss://, unix:// "
                             "or redis+cluster://host:port,host:port")
        if scheme == "redis+cluster":
            hosts = value.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
            bad = [h for h in hosts.split(",") if not re.fullmatch(r"[^:,\s]+:\d{1,5}", h.strip())]
            if not hosts or bad:
                raise ValueError(f"{value!r}: every redis+cluster node must be host:port (got {bad or [hosts]})")
        return value

    @field_validator("routes")
    @classmethod
    def _unique_ids(cls, routes: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for index, rule in enumerate(routes):
            if rule.id in seen:
                raise ValueError(f"routes[{index}].id {rule.id!r} is used by an earlier route")
            seen.add(rule.id)
        return routes
