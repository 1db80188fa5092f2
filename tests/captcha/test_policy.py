"""CAPTCHA policy: invalid configuration is refused at load with the field named; valid config
becomes the runtime's settings (scopes, levels, ladder, providers)."""

from __future__ import annotations

import pytest

from gateway.core.clock import FrozenClock
from gateway.core.errors import ConfigError
from gateway.core.state import MemoryStore
from policies.features import build_captcha, captcha_settings
from policies.loader import PolicyError, load_policy_text

HEAD = 'upstream: {url: "http://127.0.0.1:9"}\n'
ROUTES = """
routes:
  - id: login
    match: {path: "/login"}
    limits: [{name: soft, rate: "1/minute", key: ip, on_exceed: shadow},
             {name: hard, rate: "1/minute", key: ip}]
    captcha: %s
"""


def load(captcha: str, top: str = "") -> object:
    return load_policy_text(HEAD + top + ROUTES % captcha).policy


@pytest.mark.parametrize("captcha, message", [
    ("sometimes", "routes[0].captcha"),
    ("{}", "exactly one of always"),
    ("{always: true, after_failures: 3}", "exactly one of always"),
    ("{after_failures: 0}", "routes[0].captcha.after_failures"),
    ("{on_limit: nope}", "routes[0].captcha.on_limit: no limit named 'nope'"),
    ("{on_limit: hard}", "routes[0].captcha.on_limit: limit 'hard' has on_exceed: deny"),
    ("{always: true, level: 9}", "routes[0].captcha.level: 9 is above the 5 levels"),
    ("{risk_at_least: extreme}", "routes[0].captcha.risk_at_least"),
    ("{always: true, scope: 'Bad Scope'}", "routes[0].captcha.scope"),
    ("{always: true, uses: -1}", "routes[0].captcha.uses"),
    ("{always: true, escalate: {then: explode}}", "routes[0].captcha.escalate.then"),
    ("{always: true, colour: blue}", "routes[0].captcha.colour"),
])
def test_bad_route_captcha_is_refused_naming_the_field(captcha: str, message: str) -> None:
    """Each mistake fails at load, and the message names the field."""
    with pytest.raises(PolicyError) as caught:
        load(captcha)
    assert message in str(caught.value)


@pytest.mark.parametrize("top, message", [
    ("captcha: {levels: []}\n", "captcha.levels"),
    ("captcha: {default_level: 7}\n", "default_level 7 is above the 5 levels"),
    ("captcha: {levels: [{cost: 0, counter: 5}]}\n", "captcha.levels[0].cost"),
    ("captcha: {algorithm: MD5}\n", "captcha.algorithm"),
    ("captcha: {providers: [{kind: recaptcha, site_key: x, secret_env: S}]}\n", "captcha.providers[0].kind"),
    ("captcha: {providers: [{kind: turnstile, site_key: x, secret_env: S, level: 8}]}\n",
     "providers[0].level 8 is above"),
    ("captcha: {providers: [{kind: hcaptcha, site_key: x, secret_env: S, verify_url: 'ftp://x'}]}\n",
     "captcha.providers[0].verify_url"),
    ("captcha: {cookie: {name: 'a b'}}\n", "captcha.cookie.name"),
])
def test_bad_captcha_section_is_refused_naming_the_field(top: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load("always", top)
    assert message in str(caught.value)


def test_missing_provider_secret_names_the_field() -> None:
    """A provider whose secret variable is unset is refused at start, naming it."""
    policy = load("always", "captcha: {providers: [{kind: turnstile, site_key: x, secret_env: TS_SECRET}]}\n")
    with pytest.raises(ConfigError, match=r"captcha.providers\[0\].secret_env: \$TS_SECRET is not set"):
        captcha_settings(policy, {})  # type: ignore[arg-type]


def test_settings_from_policy() -> None:
    """Shorthand, triggers, scopes, levels and the ladder land in the runtime settings."""
    policy = load("{on_limit: soft, level: 3, scope: auth, uses: 2, escalate: {strikes: 2, then: hold}}",
                  "captcha: {providers: [{kind: hcaptcha, site_key: x, secret_env: HC, level: 4}]}\n")
    settings = captcha_settings(policy, {"HC": "secret"})  # type: ignore[arg-type]
    route = settings.route("login")
    assert (route.trigger, route.scope, route.level, route.uses, route.on_limit) == ("on_limit", "auth", 3, 2, "soft")
    assert route.escalate.then == "hold" and route.escalate.strikes == 2
    assert {"auth", "login", "default", "internal"} <= settings.scopes
    assert settings.providers[0].verify_url == "https://api.hcaptcha.com/siteverify"
    assert settings.route("unconfigured").scope == "unconfigured" and settings.route("unconfigured").trigger == "none"


def test_clearance_keys_from_environment() -> None:
    """TSGATE_CLEARANCE_KEYS is read like the other rings; a broken value fails at start."""
    from policies.features import ClearanceKeyRing

    policy = load("always")
    ring = ClearanceKeyRing.generate()
    runtime = build_captcha(policy, MemoryStore(), FrozenClock(),  # type: ignore[arg-type]
                            environ={"TSGATE_CLEARANCE_KEYS": ring.to_json()})
    assert runtime.sealer.keys.current.kid == ring.keys[0].kid
    with pytest.raises(ConfigError, match="TSGATE_CLEARANCE_KEYS"):
        build_captcha(policy, MemoryStore(), FrozenClock(), environ={"TSGATE_CLEARANCE_KEYS": "{"})  # type: ignore[arg-type]
