"""The shipped model and model files: versioned by content hash, tamper-evident, immutable,
hot-swappable, and resistant to dilution by padding."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from moderation.errors import ModelError
from moderation.model import DEFAULT_MODEL_PATH, LinearModel, load_model

SPAM = "WINNER!! You have won a £1000 prize. Call 09061701461 now to claim your reward, T&C apply"
HAM = "Are we still on for dinner tonight? I can pick you up at 7 if that works."


def test_default_model_separates_spam_and_ham(model: LinearModel) -> None:
    """The shipped model scores an obvious SMS spam high and a chat message low."""
    assert model.score_text(SPAM).probability > 0.9
    assert model.score_text(HAM).probability < 0.1
    assert model.version.startswith("sha256:") and model.meta["n"] == 4837


def test_model_card_reports_the_shipped_model(model: LinearModel) -> None:
    """MODEL_CARD.md names the shipped file's version and its cross-validated MCC."""
    card = (DEFAULT_MODEL_PATH.parent / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert model.version in card
    assert f"{model.meta['cv']['mcc']:.4f}" in card


def test_weights_are_read_only(model: LinearModel) -> None:
    """A loaded model cannot be modified in place (swap by loading a new one)."""
    with pytest.raises(ValueError, match="read-only"):
        model.weights[0] = 1.0


def test_load_returns_a_new_object_with_the_same_version(tmp_path: Path, model: LinearModel) -> None:
    """Loading twice gives two objects; a copied file keeps the version (content hash)."""
    copy = tmp_path / "m.npz"
    shutil.copy(DEFAULT_MODEL_PATH, copy)
    other = load_model(copy)
    assert other is not model and other.version == model.version
    assert np.array_equal(other.weights, model.weights)


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    """A model file whose weights do not match the recorded hash is refused."""
    data = np.load(DEFAULT_MODEL_PATH, allow_pickle=False)
    values = data["values"].copy()
    values[0] = values[0] + np.float16(1.0)
    forged = tmp_path / "forged.npz"
    np.savez_compressed(forged, deltas=data["deltas"], values=values, header=data["header"])
    with pytest.raises(ModelError, match="hash"):
        load_model(forged)


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04garbage"])
def test_garbage_and_missing_files_are_model_errors(tmp_path: Path, content: bytes) -> None:
    """Missing or non-model files raise ModelError, never a numpy/zip exception."""
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ModelError):
        load_model(path)
    with pytest.raises(ModelError):
        load_model(tmp_path / "absent.npz")


def test_pickled_payload_is_not_loaded(tmp_path: Path) -> None:
    """An .npz carrying an object array (pickle) is refused, not unpickled."""
    path = tmp_path / "pickle.npz"
    np.savez(path, deltas=np.array([object()], dtype=object), values=np.zeros(1), header=np.zeros(1))
    with pytest.raises(ModelError):
        load_model(path)


def test_dilution_is_caught_by_the_segment_score(model: LinearModel) -> None:
    """Spam padded with pages of harmless text: the whole-text score drops, the worst segment does not."""
    # ~4.5 KB of varied harmless words on each side of one 89-character spam SMS. (Repeating one
    # sentence would not dilute at all: features are binary, so repetition adds nothing.)
    rng = random.Random(1)
    words = ("the a to and of we you it is was for on with that this at be have are not but my your just so "
             "what all about can if out up time go get day like one good know see").split()
    padding = " ".join(rng.choice(words) for _ in range(1500))
    result = model.score_text(padding + " " + SPAM + " " + padding)
    assert result.segment_probability > 0.9
    assert result.segment_probability - result.probability > 0.3


def test_save_and_reload_round_trip(tmp_path: Path, model: LinearModel) -> None:
    """save() writes a file that loads to the same scores; the version is the file's hash."""
    path = tmp_path / "again.npz"
    version = model.save(path)
    again = load_model(path)
    assert again.version == version
    assert again.score_text(SPAM).margin == pytest.approx(model.score_text(SPAM).margin, abs=1e-6)
