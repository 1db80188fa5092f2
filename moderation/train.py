"""Training and evaluation of the content model (offline tooling; scikit-learn is used here only).

The learner is NB-LR (Wang & Manning, ACL 2012: "Baselines and Bigrams"): each hashed feature is
scaled by its smoothed log-count ratio between spam and ham, then a class-weighted L2 logistic
regression is fitted. Both steps are linear, so the scaling folds into the weights and scoring
stays one dot product. Calibration is Platt scaling fitted on out-of-fold margins.

Evaluation without a model cross-validates with folds grouped by normalized text (duplicates
and near-copies never straddle train and test, which would inflate the scores), scoring each
fold with the run-time scorer (``LinearModel``), i.e. exactly what the gateway would compute.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from moderation.errors import ModerationConfigError
from moderation.features import FeatureSpec, featurize
from moderation.model import LinearModel
from moderation.normalize import Normalized, normalize

__all__ = ["DEFAULT_SPEC", "Metrics", "TrainSettings", "cross_validate", "evaluate", "read_labeled_csv", "train"]

DEFAULT_SPEC = FeatureSpec(bits=20, char_min=1, char_max=5, word_bigrams=True, shapes=True)
_LABELS = {"spam": 1, "1": 1, "ham": 0, "0": 0}


@dataclass(frozen=True, slots=True)
class TrainSettings:
    spec: FeatureSpec = DEFAULT_SPEC
    c: float = 30.0  # inverse L2 strength
    spam_weight: float | None = None  # class weight of spam (ham = 1); None: n_ham / n_spam (balanced)
    nb_alpha: float = 1.0  # Laplace smoothing of the log-count ratios
    segment_chars: int = 300  # ~2 SMS, the length the model knows: one spam SMS dominates its window
    folds: int = 5
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Metrics:
    precision: float
    recall: float
    mcc: float
    pr_auc: float
    recall_at_fpr_0_001: float
    recall_at_fpr_0_002: float
    recall_at_fpr_0_01: float
    n: int
    n_spam: int

    def as_json(self) -> dict[str, float | int]:
        """Exactly the keys the CLI's ``--json`` promises."""
        return {"precision": self.precision, "recall": self.recall, "mcc": self.mcc, "pr_auc": self.pr_auc,
                "recall_at_fpr_0.001": self.recall_at_fpr_0_001, "recall_at_fpr_0.01": self.recall_at_fpr_0_01,
                "n": self.n}


def read_labeled_csv(path: str | Path, text_col: str = "text", label_col: str = "label") -> tuple[list[str], list[int]]:
    """Texts and 0/1 labels from a CSV with a header. Labels: spam/ham or 1/0 (case-insensitive)."""
    texts: list[str] = []
    labels: list[int] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            for col, flag in ((text_col, "--text-col"), (label_col, "--label-col")):
                if col not in columns:
                    raise ModerationConfigError(f"{path}: no column {col!r} ({flag}); columns are {columns}")
            for line, row in enumerate(reader, start=2):
                raw = (row.get(label_col) or "").strip().lower()
                if raw not in _LABELS:
                    raise ModerationConfigError(f"{path}:{line}: label {raw!r} is not spam/ham or 1/0")
                texts.append(row.get(text_col) or "")
                labels.append(_LABELS[raw])
    except OSError as exc:
        raise ModerationConfigError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ModerationConfigError(f"{path}: not a UTF-8 CSV ({exc})") from exc
    if not texts:
        raise ModerationConfigError(f"{path}: no rows")
    return texts, labels


def _matrix(views: Sequence[Normalized], spec: FeatureSpec) -> sp.csr_matrix:
    data: list[npt.NDArray[np.float64]] = []
    indices: list[npt.NDArray[np.int64]] = []
    indptr = [0]
    for view in views:
        feats = featurize(view, spec)
        for idx in (feats.char_idx, feats.word_idx):
            if len(idx):
                indices.append(idx)
                data.append(np.full(len(idx), 1.0 / math.sqrt(len(idx))))
        indptr.append(indptr[-1] + len(feats.char_idx) + len(feats.word_idx))
    matrix = sp.csr_matrix((np.concatenate(data) if data else np.zeros(0),
                            np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64),
                            np.asarray(indptr)), shape=(len(views), spec.size))
    matrix.sum_duplicates()  # repeated n-grams become counts / sqrt(family size), as at run time
    return matrix


def _fit(matrix: sp.csr_matrix, y: npt.NDArray[np.int64],
         settings: TrainSettings) -> tuple[npt.NDArray[np.float32], float]:
    from sklearn.linear_model import LogisticRegression

    present = matrix.copy()
    present.data = np.ones_like(present.data)
    spam = settings.nb_alpha + np.asarray(present[y == 1].sum(axis=0)).ravel()
    ham = settings.nb_alpha + np.asarray(present[y == 0].sum(axis=0)).ravel()
    ratio = np.log((spam / spam.sum()) / (ham / ham.sum()))
    scaled = sp.csr_matrix(matrix.multiply(ratio))
    n_spam = max(1, int((y == 1).sum()))
    spam_weight = settings.spam_weight if settings.spam_weight is not None else int((y == 0).sum()) / n_spam
    learner = LogisticRegression(C=settings.c, class_weight={0: 1.0, 1: spam_weight},
                                 solver="liblinear", max_iter=5000)
    learner.fit(scaled, y)
    weights = (learner.coef_.ravel() * ratio).astype(np.float32)
    # float16 on disk: round here so cross-validation measures what a saved model will score.
    weights = weights.astype(np.float16).astype(np.float32)
    return weights, float(learner.intercept_[0])


def _groups(views: Sequence[Normalized]) -> npt.NDArray[np.int64]:
    keys = [" ".join("".join(ch for ch in v.folded if ch.isalnum() or ch.isspace()).split()) for v in views]
    return np.unique(np.asarray(keys, dtype=object), return_inverse=True)[1].astype(np.int64)


def _folds(y: npt.NDArray[np.int64], groups: npt.NDArray[np.int64], settings: TrainSettings) -> list[tuple[Any, Any]]:
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = min(settings.folds, int(np.bincount(y, minlength=2).min()))
    if n_splits < 2:
        raise ModerationConfigError("cross-validation needs at least 2 examples of each class")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=settings.seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def _model(weights: npt.NDArray[np.float32], bias: float, settings: TrainSettings,
           platt: tuple[float, float] = (1.0, 0.0), meta: dict[str, Any] | None = None) -> LinearModel:
    weights.flags.writeable = False
    return LinearModel(weights=weights, bias=bias, spec=settings.spec, platt=platt,
                       segment_chars=settings.segment_chars, version="unsaved", meta=meta or {})


def _oof_margins(views: Sequence[Normalized], matrix: sp.csr_matrix, y: npt.NDArray[np.int64],
                 settings: TrainSettings) -> npt.NDArray[np.float64]:
    margins = np.zeros(len(y))
    for train_idx, test_idx in _folds(y, _groups(views), settings):
        weights, bias = _fit(matrix[train_idx], y[train_idx], settings)
        model = _model(weights, bias, settings)
        for i in test_idx:
            margins[i] = model.score(views[i]).margin
    return margins


def metrics(y: Sequence[int] | npt.NDArray[np.int64], margins: npt.NDArray[np.float64]) -> Metrics:
    """Threshold metrics at margin > 0 (the model's decision) and ranking metrics over all margins."""
    from sklearn.metrics import average_precision_score, matthews_corrcoef, roc_curve

    truth = np.asarray(y, dtype=np.int64)
    predicted = margins > 0
    tp = int((predicted & (truth == 1)).sum())
    fp = int((predicted & (truth == 0)).sum())
    n_spam = int(truth.sum())
    both = 0 < n_spam < len(truth)

    def recall_at(max_fpr: float) -> float:
        if not both:
            return float("nan")
        fpr, tpr, _ = roc_curve(truth, margins)
        return float(tpr[fpr <= max_fpr].max())

    return Metrics(
        precision=round(tp / (tp + fp), 4) if tp + fp else 0.0,
        recall=round(tp / n_spam, 4) if n_spam else float("nan"),
        mcc=round(float(matthews_corrcoef(truth, predicted)), 4),
        pr_auc=round(float(average_precision_score(truth, margins)), 4) if both else float("nan"),
        recall_at_fpr_0_001=round(recall_at(0.001), 4), recall_at_fpr_0_002=round(recall_at(0.002), 4),
        recall_at_fpr_0_01=round(recall_at(0.01), 4), n=len(truth), n_spam=n_spam)


def _platt(margins: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    calibrator = LogisticRegression(C=1e4, max_iter=1000)
    calibrator.fit(margins.reshape(-1, 1), y)
    return float(calibrator.coef_[0, 0]), float(calibrator.intercept_[0])


def cross_validate(texts: Sequence[str], labels: Sequence[int], settings: TrainSettings | None = None) -> Metrics:
    """Grouped k-fold metrics of training on ``texts`` (no model file involved)."""
    settings = settings or TrainSettings()
    views = [normalize(t) for t in texts]
    y = np.asarray(labels, dtype=np.int64)
    return metrics(y, _oof_margins(views, _matrix(views, settings.spec), y, settings))


def train(texts: Sequence[str], labels: Sequence[int], settings: TrainSettings | None = None,
          source: str = "") -> tuple[LinearModel, Metrics]:
    """Fit on everything; calibrate on out-of-fold margins, whose metrics are returned too."""
    settings = settings or TrainSettings()
    views = [normalize(t) for t in texts]
    y = np.asarray(labels, dtype=np.int64)
    matrix = _matrix(views, settings.spec)
    oof = _oof_margins(views, matrix, y, settings)
    cv = metrics(y, oof)
    platt = _platt(oof, y)
    weights, bias = _fit(matrix, y, settings)
    digest = hashlib.sha256("\n".join(f"{label}\t{text}" for text, label in zip(texts, labels, strict=True))
                            .encode("utf-8", "surrogatepass")).hexdigest()
    meta = {"trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "source": source,
            "data_sha256": digest, "n": len(y), "n_spam": int(y.sum()),
            "learner": f"NB-LR (alpha={settings.nb_alpha}, C={settings.c}, "
                       f"spam_weight={settings.spam_weight or 'n_ham/n_spam'})",
            "cv": cv.as_json() | {"recall_at_fpr_0.002": cv.recall_at_fpr_0_002}}
    return _model(weights, bias, settings, platt, meta), cv


def evaluate(model: LinearModel, texts: Sequence[str], labels: Sequence[int]) -> Metrics:
    margins = np.asarray([model.score_text(t).margin for t in texts])
    return metrics(labels, margins)
