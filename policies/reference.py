"""docs/policy-reference.md, generated from the policy model so it cannot drift.

Regenerate with ``python -m policies.reference > docs/policy-reference.md``; a test fails when
the committed file differs from what this prints."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from policies.model import Policy

__all__ = ["render_reference"]

INTRO = """# Policy reference

Generated from `policies/model.py` by `python -m policies.reference`; do not edit by hand.
Every section is strict: an unknown field is an error, and errors name the field path and line
(`routes[3].mode (line 12): ...`). Durations take `ms`, `s`, `m`, `h`, `d` (`500ms`, `30s`);
sizes take `B`, `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`. `tsgate policy schema` prints the JSON Schema
for editors; `tsgate policy check FILE` validates a file.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " (optional)" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "(defaults)"
    return f"`{json.dumps(value)}`"


def _models(model: type[BaseModel], seen: list[type[BaseModel]]) -> list[type[BaseModel]]:
    if model in seen:
        return seen
    seen.append(model)
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            ann = stack.pop()
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                _models(ann, seen)
            stack.extend(typing.get_args(ann))
    return seen


def render_reference() -> str:
    out = [INTRO]
    for model in _models(Policy, []):
        out.append(f"\n## {model.__name__}\n")
        if model.__doc__ and model is not Policy:
            out.append(model.__doc__.strip().split("\n\n")[0] + "\n")
        out.append("| field | type | default | meaning |\n|---|---|---|---|")
        for name, field in model.model_fields.items():
            desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render_reference(), end="")
