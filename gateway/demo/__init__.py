"""Demo social backend that runs behind tsgate (``tsgate demo`` / ``python -m gateway.demo``)."""

from __future__ import annotations

from gateway.demo.backend import create_app, run

__all__ = ["create_app", "run"]
