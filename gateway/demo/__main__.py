"""Run the demo backend: ``python -m gateway.demo --host 127.0.0.1 --port 8000``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gateway.demo.backend import run

__all__ = ["main", "run"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.demo", description="tsgate demo social backend")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="bind port (default 8000)")
    args = parser.parse_args(argv)
    run(args.host, args.port)


if __name__ == "__main__":
    main()
