"""Reading a pipeline config: YAML file, ``--set section.key=value`` overrides, path expansion.

Example::

    >>> from blast_ray.config import load_config
    >>> cfg = load_config("configs/ml-100k.yaml", overrides=["train.epochs=3"])
    >>> cfg.train.epochs
    3
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from blast_ray.config.errors import ConfigError, key_error
from blast_ray.config.schema import PipelineConfig


def shared_data_dir() -> Path:
    """The shared datasets folder: $BLAST_DATA_DIR, else ../shared/data next to the project."""
    env = os.environ.get("BLAST_DATA_DIR")
    if env:
        return Path(env).resolve()
    return (Path(__file__).resolve().parent.parent.parent.parent / "shared" / "data").resolve()


def expand_path(path: str, base: Path) -> str:
    """``${BLAST_DATA_DIR}``, env vars and ``~`` expanded; relative paths resolved against ``base``."""
    path = path.replace("${BLAST_DATA_DIR}", str(shared_data_dir()))
    path = os.path.expandvars(os.path.expanduser(path))
    if "://" in path or os.path.isabs(path):
        return path
    return str((base / path).resolve())


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``section.key=value`` in the parsed YAML ``data``; the value is parsed as YAML."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected section.key=value, e.g. train.epochs=5")
    key, raw = override.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: '{p}' is not a section")
    node[parts[-1]] = value


def config_from_dict(data: dict[str, Any], base_dir: Path | str = ".") -> PipelineConfig:
    """Build and validate a PipelineConfig from a plain dict (as parsed from YAML).

    A pipeline config must name its dataset (name, format, paths); relative paths in
    ``dataset.paths`` and ``features.visual_features`` resolve against ``base_dir``.
    """
    cfg = PipelineConfig.from_dict(data or {})
    missing = cfg.dataset.missing_keys()
    if missing:
        key, msg = missing[0]
        raise key_error(f"dataset.{key}", msg)
    base = Path(base_dir)
    changes: dict[str, Any] = {"dataset": {"paths": {k: expand_path(v, base) for k, v in cfg.dataset.paths.items()}}}
    if cfg.features.visual_features:
        changes["features"] = {"visual_features": expand_path(cfg.features.visual_features, base)}
    return cfg.updated(**changes)


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML config file, apply ``section.key=value`` overrides, validate.

    Relative dataset paths resolve against the config file's folder.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of sections")
    for o in overrides or []:
        apply_override(data, o)
    return config_from_dict(data, path.parent)
