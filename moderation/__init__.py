"""Content moderation: explainable inline spam scoring of posts, comments and DMs.

The safe recipe: build ``ModerationSettings`` for a route, load a model (``load_default_model()``
or ``load_model(path)``), and put a ``ModerationGuard`` in the route's pipeline with a
``ReviewQueue`` as its sink. Below it: ``normalize`` (evasion-resistant text views),
``extract_urls``, ``extract_content``, the banks, the near-duplicate index and the scorer.
``tsgate moderation fetch-data | train | eval | export-labels`` manage the model. The database
side (``ReviewItem``, ``ReviewQueue``) is imported from ``moderation.records``: it is the one
module that needs authn's database layer."""

from __future__ import annotations

from moderation.config import (
    ACTIONS,
    DEFAULT_WEIGHTS,
    AccountSettings,
    Action,
    ContentFields,
    KeywordBankSpec,
    ModerationSettings,
    NearDupSettings,
    RegexBankSpec,
    SymbolSettings,
    Thresholds,
    UrlSettings,
)
from moderation.errors import ModelError, ModerationConfigError, ModerationError, PatternError, ReviewQueueError
from moderation.extract import BodyProblem, Extracted, FieldText, extract_content
from moderation.guard import BAND_WEIGHTS, SIGNAL_NAME, ModerationGuard, risk_band_of
from moderation.model import LinearModel, ModelScore, load_default_model, load_model
from moderation.normalize import Normalized, normalize
from moderation.scoring import ContentScorer, Symbol, Verdict, verdict
from moderation.sinks import NewReviewItem, ReviewSink
from moderation.urls import extract_urls

__all__ = [
    "ACTIONS",
    "BAND_WEIGHTS",
    "DEFAULT_WEIGHTS",
    "SIGNAL_NAME",
    "AccountSettings",
    "Action",
    "BodyProblem",
    "ContentFields",
    "ContentScorer",
    "Extracted",
    "FieldText",
    "KeywordBankSpec",
    "LinearModel",
    "ModelError",
    "ModelScore",
    "ModerationConfigError",
    "ModerationError",
    "ModerationGuard",
    "ModerationSettings",
    "NearDupSettings",
    "NewReviewItem",
    "Normalized",
    "PatternError",
    "RegexBankSpec",
    "ReviewQueueError",
    "ReviewSink",
    "Symbol",
    "SymbolSettings",
    "Thresholds",
    "UrlSettings",
    "Verdict",
    "extract_content",
    "extract_urls",
    "load_default_model",
    "load_model",
    "normalize",
    "risk_band_of",
    "verdict",
]
