"""``ConfigError`` and the translation of a pydantic ``ValidationError`` into one line.

A config error always reads ``config key '<dotted.key>': <what is wrong and how to fix it>``, for
example ``config key 'train.epochs': must be an integer, got 'many'``. Only the first problem is
spelled out (one line); the count of further problems is appended.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


class KeyedValueError(ValueError):
    """Raised by cross-field validators: ``key`` is relative to the model that raised it."""

    def __init__(self, key: str, msg: str):
        super().__init__(msg)
        self.key = key
        self.msg = msg


def key_error(key: str, msg: str) -> ConfigError:
    """The one-line error for ``key`` (a dotted name)."""
    return ConfigError(f"config key '{key}': {msg}")


def _join(prefix: str, loc: tuple[Any, ...]) -> str:
    key = prefix
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key = f"{key}.{part}" if key else str(part)
    return key


def _model_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class reached by following field names ``loc`` from ``cls`` (None if not a model)."""
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        cls = ann
    return cls


def _describe(err: dict[str, Any]) -> str:
    """What is wrong, in words a YAML author can act on."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer, got {value!r}"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"must be a number, got {value!r}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false, got {value!r}"
    if kind == "string_type":
        return f"must be a string, got {value!r}"
    if kind == "literal_error":
        return f"{value!r} is not one of {ctx.get('expected')}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}, got {value!r}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']}, got {value!r}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']}, got {value!r}"
    if kind == "less_than":
        return f"must be < {ctx['lt']}, got {value!r}"
    if kind in ("tuple_type", "list_type", "iterable_type"):
        return f"must be a list (YAML [a, b] or 'a,b'), got {value!r}"
    if kind in ("too_short", "too_long"):
        return f"{err['msg'].lower()}, got {value!r}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping of keys, got {type(value).__name__}"
    if kind == "missing":
        return "is required"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return err["msg"]


def config_error(exc: ValidationError, cls: type[BaseModel], prefix: str = "") -> ConfigError:
    """One ``ConfigError`` for a pydantic ``ValidationError`` raised while building ``cls``.

    ``prefix`` is the dotted name of ``cls`` in a pipeline config ("train" for ``TrainConfig``,
    "" for the whole ``PipelineConfig``), so a section built on its own still names ``train.x``.
    """
    errors = exc.errors()
    err = errors[0]
    loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    if isinstance(cause, ConfigError):
        # a nested section (built through its own __init__) already named its full key
        return ConfigError(f"{cause}{more}")
    if err["type"] == "extra_forbidden":
        parent = _model_at(cls, loc[:-1])
        valid = ", ".join(sorted(parent.model_fields)) if parent else "?"
        msg = f"unknown key; valid keys here are {valid}"
    elif isinstance(cause, KeyedValueError):
        loc = loc + tuple(cause.key.split("."))
        msg = cause.msg
    else:
        msg = _describe(err)
        parent = _model_at(cls, loc[:-1]) if loc and isinstance(loc[-1], str) else None
        field = parent.model_fields.get(loc[-1]) if parent else None
        if field is not None and field.description and err["type"] not in ("extra_forbidden", "missing"):
            msg = f"{msg} ({field.description})"
    return key_error(_join(prefix, loc), msg + more)
