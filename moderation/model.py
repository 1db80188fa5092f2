"""The content model at run time: a linear model over hashed n-grams, scored with numpy only.

A ``LinearModel`` is immutable (its arrays are read-only); ``load_model`` always returns a new
one, so swapping models is one reference assignment and a request in flight keeps the model it
started with. Files are ``.npz`` (numpy, ``allow_pickle=False``: loading a model never runs
code) holding sorted bucket indices (delta-encoded), float16 weights and a JSON header. The
version is the file's SHA-256, and the header carries a hash of the weights that is checked at
load, so a truncated or edited file is refused rather than scored with.

The model scores the whole text (as trained and evaluated). Texts longer than two segments are
also scored per segment (every window of ``segment_chars`` starting at a multiple of half a
segment: two overlapping tilings), and the most spam-like
segment is reported separately: the scorer turns it into its own symbol, so padding a spam
paragraph with pages of harmless prose (dilution) does not hide it, while the whole-text score
keeps its measured false-positive rate.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from moderation.errors import ModelError
from moderation.features import Features, FeatureSpec, featurize
from moderation.normalize import Normalized, normalize

__all__ = ["DEFAULT_MODEL_PATH", "FORMAT", "LinearModel", "ModelScore", "load_default_model", "load_model"]

FORMAT = "tsgate-linear-ngram/1"
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "models" / "default.npz"
MAX_MODEL_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ModelScore:
    margin: float  # linear score of the whole text (what training optimized, what eval measures)
    probability: float  # calibrated (Platt) probability of spam
    segment_margin: float  # the most spam-like segment of a long text (= margin for short texts)
    segment_probability: float
    segment: tuple[int, int]  # character span of that segment in the ``lower`` view


@dataclass(frozen=True, slots=True, eq=False)
class LinearModel:
    weights: npt.NDArray[np.float32]  # dense, 2**bits, read-only
    bias: float
    spec: FeatureSpec
    platt: tuple[float, float]  # probability = sigmoid(a * margin + b)
    segment_chars: int
    version: str
    meta: dict[str, Any] = field(default_factory=dict)

    def score(self, views: Normalized) -> ModelScore:
        return self.score_features(featurize(views, self.spec))

    def score_text(self, text: str) -> ModelScore:
        return self.score(normalize(text))

    def probability(self, margin: float) -> float:
        a, b = self.platt
        z = a * margin + b
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def score_features(self, feats: Features) -> ModelScore:
        w = self.weights
        char_w = w[feats.char_idx]
        word_w = w[feats.word_idx]
        margin = self.bias + _family(char_w) + _family(word_w)
        probability = self.probability(margin)
        seg = self.segment_chars
        if feats.length <= 2 * seg:
            return ModelScore(margin, probability, margin, probability, (0, feats.length))
        # Segments of two tilings (offsets 0 and seg/2, so no spam sentence is always cut in half)
        # are exactly the pairs of adjacent half-segments: one bincount over half-segment bins
        # (chars in [0, n), words in [n, 2n)) gives every segment of both tilings.
        half = seg // 2
        n_bins = feats.length // half + 1
        ids = np.concatenate([feats.char_pos // half, feats.word_pos // half + n_bins])
        sums = np.bincount(ids, weights=np.concatenate([char_w, word_w]), minlength=2 * n_bins).reshape(2, n_bins)
        counts = np.bincount(ids, minlength=2 * n_bins).reshape(2, n_bins)
        seg_sums = sums[:, :-1] + sums[:, 1:]
        seg_counts = counts[:, :-1] + counts[:, 1:]
        margins = self.bias + (seg_sums / np.sqrt(np.maximum(seg_counts, 1))).sum(axis=0)
        margins[seg_counts[0] < half] = -np.inf  # a sliver at an edge is too noisy to speak for anything
        index = int(np.argmax(margins))
        best = float(margins[index])
        if not math.isfinite(best):
            return ModelScore(margin, probability, margin, probability, (0, feats.length))
        start = index * half
        return ModelScore(margin, probability, best, self.probability(best), (start, min(feats.length, start + seg)))

    def save(self, path: str | Path) -> str:
        """Write the model; returns the new file's version (its SHA-256 prefix)."""
        nonzero = np.flatnonzero(self.weights).astype(np.uint32)
        values = self.weights[nonzero].astype(np.float16)
        deltas = np.diff(nonzero, prepend=np.uint32(0)).astype(np.uint32)
        header = dict(self.meta)
        header.update({
            "format": FORMAT, "bias": self.bias, "platt": list(self.platt), "segment_chars": self.segment_chars,
            "spec": {"bits": self.spec.bits, "char_min": self.spec.char_min, "char_max": self.spec.char_max,
                     "word_bigrams": self.spec.word_bigrams, "fold_digits": self.spec.fold_digits,
                     "shapes": self.spec.shapes, "max_chars": self.spec.max_chars},
            "weights_sha256": _weights_digest(deltas, values),
        })
        buffer = io.BytesIO()
        np.savez_compressed(buffer, deltas=deltas, values=values,
                            header=np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8))
        data = buffer.getvalue()
        Path(path).write_bytes(data)
        return _version(data)


def _family(values: npt.NDArray[np.float32]) -> float:
    return float(values.sum()) / math.sqrt(len(values)) if len(values) else 0.0


def _weights_digest(deltas: npt.NDArray[np.uint32], values: npt.NDArray[np.float16]) -> str:
    return hashlib.sha256(deltas.tobytes() + values.tobytes()).hexdigest()


def _version(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def load_model(path: str | Path) -> LinearModel:
    """Load a model file. Every problem (missing, too large, not a model, tampered) is ModelError."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_MODEL_BYTES:
            raise ModelError(f"{path}: larger than {MAX_MODEL_BYTES} bytes; not a tsgate model")
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model ({exc.strerror or exc})") from exc
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            deltas = arrays["deltas"].astype(np.uint32)
            values = arrays["values"].astype(np.float16)
            header = json.loads(bytes(arrays["header"]).decode("utf-8"))
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a tsgate model file ({type(exc).__name__})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelError(f"{path}: model format {header.get('format') if isinstance(header, dict) else None!r} "
                         f"is not {FORMAT!r}")
    if header.get("weights_sha256") != _weights_digest(deltas, values):
        raise ModelError(f"{path}: weights do not match their recorded hash (truncated or edited file)")
    try:
        spec = FeatureSpec(**header["spec"])
        indices = np.cumsum(deltas, dtype=np.uint64)
        weights = np.zeros(spec.size, dtype=np.float32)
        if len(indices) and int(indices[-1]) >= spec.size:
            raise ValueError("bucket index out of range")
        weights[indices.astype(np.int64)] = values.astype(np.float32)
        a, b = (float(x) for x in header["platt"])
        model = LinearModel(weights=weights, bias=float(header["bias"]), spec=spec, platt=(a, b),
                            segment_chars=int(header["segment_chars"]), version=_version(data),
                            meta={k: v for k, v in header.items() if k not in ("spec", "platt", "bias")})
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: malformed model header ({exc})") from exc
    weights.flags.writeable = False
    return model


def load_default_model() -> LinearModel:
    """The model shipped in the package (trained on the SMS Spam Collection subset; see MODEL_CARD.md)."""
    return load_model(DEFAULT_MODEL_PATH)
