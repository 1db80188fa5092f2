"""CAPTCHA: self-hosted proof-of-work challenges on the ALTCHA v2 protocol, clearance tokens,
an escalation ladder, and Turnstile / hCaptcha as an optional further rung.

``CaptchaRuntime`` resolves every Challenge a guard returns (the pipeline asks it before
stopping a request); ``CaptchaGuard`` is the rule's own trigger (stage 40); ``CaptchaEndpoints``
serves ``{prefix}captcha/challenge`` and ``{prefix}captcha/verify`` on the proxy listener."""

from captcha.clearance import Clearance, ClearanceSealer, principal_binding
from captcha.endpoints import CaptchaEndpoints
from captcha.guard import CaptchaGuard
from captcha.keys import CaptchaKeys
from captcha.ladder import Ladder, risk_band
from captcha.metrics import CaptchaMetrics
from captcha.page import CSP, ChallengePage, wants_html
from captcha.pow import PowIssuer, PowVerdict
from captcha.providers import HCaptcha, ProviderResult, Turnstile, build_provider
from captcha.runtime import CLEARANCE_HEADER, CaptchaRuntime
from captcha.settings import DEFAULT_LEVELS, CaptchaSettings, Escalation, Level, ProviderSettings, RouteCaptcha

__all__ = [
    "CLEARANCE_HEADER",
    "CSP",
    "DEFAULT_LEVELS",
    "CaptchaEndpoints",
    "CaptchaGuard",
    "CaptchaKeys",
    "CaptchaMetrics",
    "CaptchaRuntime",
    "CaptchaSettings",
    "ChallengePage",
    "Clearance",
    "ClearanceSealer",
    "Escalation",
    "HCaptcha",
    "Ladder",
    "Level",
    "PowIssuer",
    "PowVerdict",
    "ProviderResult",
    "ProviderSettings",
    "RouteCaptcha",
    "Turnstile",
    "build_provider",
    "principal_binding",
    "risk_band",
    "wants_html",
]
