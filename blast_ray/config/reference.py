"""The config key reference (``docs/CONFIG.md``), generated from the pydantic schema.

Walks :class:`blast_ray.config.schema.PipelineConfig` and its sections: for every key its dotted
name, type, default, constraint and description (the ``Field(description=...)`` or the source
comment on / above the field). ``blast config keys`` prints it or writes it (``--write``);
``tests/test_config_reference.py`` fails when ``docs/CONFIG.md`` differs from what this module
generates, so the document can never drift from the schema.

Pure: :func:`config_reference` returns the Markdown text; nothing is read but the schema's source.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel

from blast_ray.config import schema

REFERENCE_PATH = Path("docs") / "CONFIG.md"  # relative to the repository root
_CONSTRAINTS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="),
                ("max_length", "length <="))


def _type_name(tp: Any) -> str:
    """A readable name for an annotation: ``int``, ``one of a, b``, ``list of int``, ``float or null``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        parts = [a for a in args if a is not type(None)]
        name = " or ".join(_type_name(a) for a in parts)
        return f"{name} or null" if len(parts) < len(args) else name
    if origin in (tuple, list):
        inner = args[0] if args else Any
        return f"list of ({_type_name(inner)})" if typing.get_origin(inner) is Literal else f"list of {_type_name(inner)}"
    if origin is dict:
        return f"mapping {_type_name(args[0])} -> {_type_name(args[1])}" if args else "mapping"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _constraint(field, annotation: Any) -> str:
    """``>= 1``, ``> 0, <= 1``: from the field's metadata and from an ``Annotated`` element type."""
    found = []
    metas = list(field.metadata)
    for arg in typing.get_args(annotation):  # tuple[Annotated[int, Field(ge=1)], ...]
        if typing.get_origin(arg) is typing.Annotated:
            metas += [m for a in typing.get_args(arg)[1:] for m in getattr(a, "metadata", [a])]
    for m in metas:
        for attr, sym in _CONSTRAINTS:
            v = getattr(m, attr, None)
            if v is not None:
                found.append(f"{sym} {v}")
    return ", ".join(dict.fromkeys(found))


def _default(field) -> str:
    if field.is_required():
        return "(required)"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{json.dumps(list(value) if isinstance(value, tuple) else value, default=str)}`"


def _source_comments(model: type) -> dict[str, str]:
    """field name -> its comment in the class source (trailing ``# ...`` and the ``#`` lines right above)."""
    try:
        lines = inspect.getsource(model).splitlines()
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    for line in lines:
        s = line.strip()
        if s.startswith("#"):
            above.append(s.lstrip("#").strip())
            continue
        m = re.match(r"^    (\w+)\s*:", line)
        if m:
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            text = " ".join([*above, trailing]).strip()
            if text:
                out[m.group(1)] = text
        above = []
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section_rows(model: type, prefix: str) -> list[str]:
    comments = _source_comments(model)
    rows = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            continue  # a section: documented under its own heading
        key = f"{prefix}.{name}" if prefix else name
        desc = "; ".join(d for d in (field.description, comments.get(name)) if d)
        rows.append(f"| `{key}` | {_cell(_type_name(field.annotation))} | {_cell(_default(field))} | "
                    f"{_cell(_constraint(field, field.annotation))} | {_cell(desc)} |")
    return rows


def _doc(model: type) -> str:
    doc = inspect.getdoc(model) or ""
    return "" if model.__doc__ is None or doc == inspect.getdoc(schema.ConfigModel) else doc


def config_reference() -> str:
    """The Markdown reference of every config key (top-level keys, then one table per section)."""
    root = schema.PipelineConfig
    head = "| key | type | default | constraint | description |\n|---|---|---|---|---|"
    out = [
        "# Config key reference",
        "",
        "<!-- Generated from blast_ray/config/schema.py by `blast config keys --write`; do not edit by hand "
        "(tests/test_config_reference.py fails when this file is out of date). -->",
        "",
        "Every key a pipeline YAML (or `--set section.key=value`) accepts. Unknown keys are errors; "
        "paths in a YAML resolve against the YAML's folder. See the README for how configs are loaded.",
        "",
        "## Top level",
        "",
        _doc(root),
        "",
        head,
        *_section_rows(root, ""),
    ]
    for name, field in root.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        out += ["", f"## `{name}` ({model.__name__})", ""]
        doc = _doc(model)
        if doc:
            out += [doc, ""]
        out += [head, *_section_rows(model, name)]
    return "\n".join(out).rstrip() + "\n"


def write_reference(repo_root: Path) -> Path:
    """Write :func:`config_reference` to ``<repo_root>/docs/CONFIG.md``; returns the path."""
    path = Path(repo_root) / REFERENCE_PATH
    path.write_text(config_reference(), encoding="utf-8")
    return path


if __name__ == "__main__":  # python -m blast_ray.config.reference: regenerate docs/CONFIG.md
    print(write_reference(Path(__file__).resolve().parents[2]))
