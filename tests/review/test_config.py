"""The policy's review: section is validated at load (bad values name the field) and a webhook whose
secret is not in the environment fails at start, naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from authn.db import Database
from gateway.core.clock import FrozenClock
from gateway.core.errors import ConfigError
from policies.loader import PolicyError, load_policy_text
from policies.model import ReviewConfig, ReviewWebhook
from review.runtime import ReviewRuntime

HEAD = 'version: 1\nupstream: {url: "http://127.0.0.1:9"}\n'


def test_review_settings_load_and_bad_values_name_the_field() -> None:
    """Durations parse; attempts out of range and unknown keys are refused with the field's path."""
    text = HEAD + "review: {lease: 5m, webhook: {url: 'http://h/x', secret_env: S, backoff: 250ms}}\n"
    loaded = load_policy_text(text, "<test>")
    review = loaded.policy.review
    assert review.lease == 300 and review.webhook is not None and review.webhook.backoff == 0.25
    for bad in ("review: {webhook: {url: 'http://h/x', secret_env: S, attempts: 0}}",
                "review: {leese: 5m}", "review: {webhook: {url: 'file:///etc/passwd', secret_env: S}}"):
        with pytest.raises(PolicyError) as excinfo:
            load_policy_text(HEAD + bad + "\n", "<test>")
        assert "review" in " ".join(excinfo.value.problems)


async def test_a_webhook_without_its_secret_fails_at_start(tmp_path: Path) -> None:
    """No secret in the environment: ConfigError naming review.webhook.secret_env and the variable."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        settings = ReviewConfig(webhook=ReviewWebhook(url="http://127.0.0.1:9/x", secret_env="NOPE_SECRET"))
        with pytest.raises(ConfigError, match=r"review\.webhook\.secret_env.*NOPE_SECRET"):
            ReviewRuntime(database, settings, upstream_url="http://127.0.0.1:9", authn=lambda: None,
                          clock=FrozenClock(), env={})
        runtime = ReviewRuntime(database, settings, upstream_url="http://127.0.0.1:9", authn=lambda: None,
                                clock=FrozenClock(), env={"NOPE_SECRET": "s3cret"})
        assert runtime.webhooks is not None and runtime.webhooks.secret == b"s3cret"
    finally:
        await database.dispose()
