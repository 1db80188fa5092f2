"""Route matching: method + path template → the first rule (in policy order) that matches.

Templates are compiled once into a segment trie, so a request walks its path's segments instead
of trying hundreds of regexes; the lowest rule index among the matches wins, which keeps the
policy file's "first match" reading. Literal segments compare case-insensitively (see
gateway.core.paths), a trailing slash is ignored for matching, and results are memoized
in a bounded cache."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Match", "RouteMatcher", "parse_template"]

_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def parse_template(template: str) -> list[str]:
    """Split a template into segments; raise ValueError saying what is wrong with it."""
    if not template.startswith("/"):
        raise ValueError(f"{template!r} must start with '/'")
    if template == "/":
        return []
    parts = template.strip("/").split("/")
    names: set[str] = set()
    for index, part in enumerate(parts):
        if not part:
            raise ValueError(f"{template!r} has an empty segment ('//')")
        if part == "**":
            if index != len(parts) - 1:
                raise ValueError(f"{template!r}: '**' is only allowed as the last segment")
            continue
        if "{" in part or "}" in part:
            param = _PARAM.match(part)
            if param is None:
                raise ValueError(f"{template!r}: {part!r} must be a whole segment like {{name}}")
            if param.group(1) in names:
                raise ValueError(f"{template!r}: parameter {param.group(1)!r} appears twice")
            names.add(param.group(1))
        elif part in (".", "..") or "*" in part:
            raise ValueError(f"{template!r}: {part!r} is not a valid segment")
    return parts


@dataclass(slots=True)
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    param_names: dict[int, str] = field(default_factory=dict)  # rule index → param name here
    ends: list[int] = field(default_factory=list)  # rule indexes whose template ends here
    catch_all: list[int] = field(default_factory=list)  # rule indexes with '/**' here


@dataclass(frozen=True, slots=True)
class Match:
    index: int
    params: dict[str, str]


class RouteMatcher:
    """Compiled from ``(template, methods)`` pairs in policy order."""

    def __init__(self, routes: Sequence[tuple[str, Sequence[str] | None]], cache_size: int = 8192) -> None:
        self._root = _Node()
        self._methods: list[frozenset[str] | None] = []
        self._cache: dict[tuple[str, str], Match | None] = {}
        self._cache_size = cache_size
        for index, (template, methods) in enumerate(routes):
            self._methods.append(frozenset(methods) if methods else None)
            self._add(index, parse_template(template))

    def _add(self, index: int, parts: list[str]) -> None:
        node = self._root
        for part in parts:
            if part == "**":
                node.catch_all.append(index)
                return
            param = _PARAM.match(part)
            if param is not None:
                if node.param is None:
                    node.param = _Node()
                node = node.param
                node.param_names[index] = param.group(1)
            else:
                node = node.literals.setdefault(part.lower(), _Node())
        node.ends.append(index)

    def match(self, method: str, path: str) -> Match | None:
        key = (method, path)
        cached = self._cache.get(key, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        found = self._match(method, path)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[key] = found
        return found

    def _match(self, method: str, path: str) -> Match | None:
        segments = [s for s in path.split("/") if s]
        best: list[int] = []  # smallest index found so far, and the node trail that led to it
        trail: list[tuple[_Node, str]] = []
        best_trail: list[tuple[_Node, str]] = []

        def allowed(index: int) -> bool:
            methods = self._methods[index]
            return methods is None or method in methods

        def consider(indexes: list[int]) -> None:
            for index in indexes:
                if (not best or index < best[0]) and allowed(index):
                    best[:] = [index]
                    best_trail[:] = list(trail)

        def walk(node: _Node, depth: int) -> None:
            consider(node.catch_all)  # '/**' matches zero or more remaining segments
            if depth == len(segments):
                consider(node.ends)
                return
            segment = segments[depth]
            child = node.literals.get(segment.lower())
            if child is not None:
                walk(child, depth + 1)
            if node.param is not None:
                trail.append((node.param, segment))
                walk(node.param, depth + 1)
                trail.pop()

        walk(self._root, 0)
        if not best:
            return None
        index = best[0]
        params = {n.param_names[index]: value for n, value in best_trail if index in n.param_names}
        return Match(index, params)
