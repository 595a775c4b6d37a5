"""Smoke-run helpers shared by the job tests and the docs: a small real config and the runnable stages.

``smoke_config(data_dir, store)`` is MovieLens-100k (the real shared files) with a short training
budget and short user profiles; ``runnable_stages()`` is the longest prefix of the DAG whose stages
are implemented in this checkout, plus ``report`` (which runs with whatever exists and marks the
rest "not run").
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from blast_ray.config import STAGES

ML100K = Path(__file__).resolve().parent.parent / "configs" / "ml-100k.yaml"


def stage_implemented(stage: str) -> bool:
    try:
        return importlib.util.find_spec(f"blast_ray.{stage}.stage") is not None
    except ModuleNotFoundError:
        return False


def runnable_stages() -> tuple[str, ...]:
    prefix: list[str] = []
    for s in STAGES[:-1]:
        if not stage_implemented(s):
            break
        prefix.append(s)
    return (*prefix, "report")


def smoke_config(data_dir: str | Path, store: str, path: str | Path, epochs: int = 3, **sections) -> Path:
    """Write a ml-100k config reading ``data_dir/movielens-100k`` into ``path``; returns ``path``."""
    cfg = yaml.safe_load(ML100K.read_text())
    ml = Path(data_dir) / "movielens-100k"
    cfg["dataset"]["paths"] = {k: str(ml / f"ml-100k.{k}") for k in ("inter", "item", "user")}
    cfg["store"] = store
    cfg["train"].update({"epochs": epochs, "patience": epochs})
    # The text encoder is the costliest stage of a smoke run (its time grows with the profile
    # length): 3 titles per user profile instead of 10, and a 2-thread encoder actor (1.5 CPUs:
    # fractional, so the pool leaves room for the read tasks on a 2-CPU node).
    cfg.setdefault("profiles", {})["max_items_per_user"] = 3
    cfg.setdefault("features", {})["num_cpus_per_actor"] = 1.5
    for sec, values in sections.items():
        cfg.setdefault(sec, {}).update(values)
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return Path(path)
