"""The interstitial a browser gets instead of a bare 403 when a request is challenged.

Rendered from a Jinja2 template with autoescaping; everything the page runs is served by tsgate
itself from ``{prefix}captcha/`` (no inline script or style, no third-party request), so it works
under a strict Content-Security-Policy: only our own script, worker, style and fetches."""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlencode

from jinja2 import Environment, select_autoescape

__all__ = ["ASSETS", "CSP", "ChallengePage", "wants_html"]

CSP = ("default-src 'none'; script-src 'self'; worker-src 'self'; connect-src 'self'; style-src 'self'; "
       "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

# name → (content type, file); served at {prefix}captcha/<name>.
ASSETS: dict[str, tuple[str, str]] = {
    "solver.js": ("text/javascript; charset=utf-8", "solver.js"),
    "worker.js": ("text/javascript; charset=utf-8", "worker.js"),
    "challenge.css": ("text/css; charset=utf-8", "challenge.css"),
}


def _read(name: str) -> str:
    return resources.files("captcha.assets").joinpath(name).read_text(encoding="utf-8")


def wants_html(accept: bytes | None) -> bool:
    """A browser navigation: Accept names text/html (API clients ask for JSON or nothing)."""
    return accept is not None and b"text/html" in accept.lower()


class ChallengePage:
    def __init__(self, prefix: str) -> None:
        self.base = prefix + "captcha/"
        env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
        self.template = env.from_string(_read("challenge.html"))
        self.assets: dict[str, tuple[bytes, bytes]] = {
            name: (ctype.encode(), _read(file).encode("utf-8")) for name, (ctype, file) in ASSETS.items()}

    def render(self, *, challenge_url: str, level: int, method: str, decision_id: str) -> bytes:
        html = self.template.render(
            challenge_url=challenge_url, verify_url=self.base + "verify", worker_url=self.base + "worker.js",
            solver_url=self.base + "solver.js", css_url=self.base + "challenge.css",
            retry=method in ("GET", "HEAD"), method=method, level=level, decision_id=decision_id)
        return html.encode("utf-8")

    def url(self, scope: str, level: int) -> str:
        return self.base + "challenge?" + urlencode({"scope": scope, "level": level})
