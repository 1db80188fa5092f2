"""Load a policy file: YAML → pydantic, with errors that name the field path and the line.

PyYAML silently keeps the last of two equal keys; in a security policy that hides mistakes
(a second ``mode:`` turning a rule off), so duplicate keys are refused here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gateway.core.errors import ConfigError
from policies.model import Policy

__all__ = ["LoadedPolicy", "PolicyError", "load_policy", "load_policy_text", "load_yaml_model", "with_overrides"]

Loc = tuple[str | int, ...]


class PolicyError(ConfigError):
    """The policy file is invalid. ``problems`` holds one ``path (line N): message`` per error."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    policy: Policy
    source: str
    text: str
    sha256: str


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _lines(node: yaml.Node | None, loc: Loc = (), out: dict[Loc, int] | None = None) -> dict[Loc, int]:
    """Map every field path in the document to its 1-based line."""
    out = {} if out is None else out
    if node is None:
        return out
    out.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*loc, str(key_node.value))
            out[child] = key_node.start_mark.line + 1
            _lines(value_node, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*loc, index), out)
    return out


def _format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        line = lines.get(loc[:end])
        if line is not None:
            return line
    return None


M = TypeVar("M", bound=BaseModel)


def load_yaml_model(text: str, source: str, model: type[M], what: str = "the policy") -> M:
    """Parse YAML (duplicate keys refused) into ``model``; every problem names its field path and
    line (``routes[2].mode (line 14): ...``). Shared by policies and policy test files."""
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark else "unknown line"
        raise PolicyError(source, [f"{where}: {exc.problem or exc.context}"]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(source, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise PolicyError(source, [f"{what} must be a YAML mapping"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = _lines(node)
        problems = []
        for err in exc.errors(include_url=False):
            loc: Loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            line = _line_of(loc, lines)
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field (check the spelling; see `tsgate policy schema`)"
            elif err["type"] == "missing":
                message = "required field is missing"
            where = f" (line {line})" if line else ""
            problems.append(f"{_format_loc(loc)}{where}: {message}")
        raise PolicyError(source, problems) from exc


def load_policy_text(text: str, source: str = "<policy>") -> LoadedPolicy:
    policy = load_yaml_model(text, source, Policy)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedPolicy(policy, source, text, digest)


def load_policy(path: str | Path) -> LoadedPolicy:
    """Read and validate a policy file; raise PolicyError naming field paths and lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(str(path), ["the file is not UTF-8"]) from exc
    return load_policy_text(text, str(path))


def with_overrides(loaded: LoadedPolicy, overrides: dict[str, Any]) -> LoadedPolicy:
    """The policy with command-line/environment settings applied on top (e.g. ``state``).
    Overrides are re-applied on every reload so a reload never undoes them."""
    if not overrides:
        return loaded
    try:
        policy = Policy.model_validate({**loaded.policy.model_dump(), **overrides})
    except ValidationError as exc:
        problems = [f"{_format_loc(tuple(e['loc']))} (override): {e['msg']}" for e in exc.errors()]
        raise PolicyError(loaded.source, problems) from exc
    return LoadedPolicy(policy, loaded.source, loaded.text, loaded.sha256)
