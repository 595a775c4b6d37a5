"""Files of a ``blast tune`` experiment, under ``layout.tune_parts(dataset, experiment)`` (the rest of
that folder is Ray Tune's own: ``tuner.pkl``, ``experiment_state-*.json``, ``trial_<id>/``).

- ``best_config.yaml``: the chosen configuration as a pipeline config (comment header naming the run);
- ``tune_summary.json``: budget, scheduler, search seed, per-trial values / best validation metric /
  reported keys, the best trial, what it keeps, the final run's metrics (or null);
- ``train_state.pt`` inside each trial checkpoint: the training state of the last epoch (resume);
- ``<store>/<dataset>/tune/rerank-scores/<hash>.json``: the full-length validation score of one
  re-ranked configuration (``blast_ray.tune.rerank``), keyed by a hash of the whole config, so a
  resumed tune or a re-run benchmark never trains a candidate twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blast_ray.store import ArtifactStore, layout

BEST_CONFIG = "best_config.yaml"
SUMMARY = "tune_summary.json"
TRIAL_STATE = "train_state.pt"
RERANK_SCORES = "rerank-scores"  # beside the experiments: one JSON per re-ranked config (any experiment)


def write_best_config(store: ArtifactStore, dataset: str, experiment: str, text: str) -> None:
    store.write_text(text, *layout.tune_parts(dataset, experiment, BEST_CONFIG))


def write_summary(store: ArtifactStore, dataset: str, experiment: str, summary: dict[str, Any]) -> None:
    store.write_text(json.dumps(summary, indent=1, default=str), *layout.tune_parts(dataset, experiment, SUMMARY))


def load_summary(store: ArtifactStore, dataset: str, experiment: str) -> dict[str, Any]:
    return json.loads(store.read_text(*layout.tune_parts(dataset, experiment, SUMMARY)))


def start_values_from(path: str | Path, option: str = "--start-from") -> dict[str, Any]:
    """The chosen (tuned) values of a finished tune, to start another space's search from them
    (``blast tune --start-from`` / ``--also-from``, named by ``option`` in errors): ``path`` is the
    experiment folder or its ``tune_summary.json``.
    Only the tuned keys (``best.values``), never the space's fixed ones (``train.model`` ...)."""
    p = Path(path)
    f = p / SUMMARY if p.is_dir() else p
    if not f.is_file():
        raise ValueError(f"{option} {path}: no {SUMMARY} there; pass the folder of a finished `blast tune` "
                         f"experiment (<store>/<dataset>/tune/<experiment>) or its {SUMMARY}")
    try:
        values = json.loads(f.read_text())["best"]["values"]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{option} {f}: not a tune summary with best.values ({type(e).__name__}: {e})") from None
    return dict(values)


def write_trial_state(checkpoint_dir: str | Path, state: bytes) -> None:
    """The serialized training state into a (temporary) folder that becomes a Tune checkpoint."""
    Path(checkpoint_dir, TRIAL_STATE).write_bytes(state)


def read_trial_state(checkpoint_dir: str | Path) -> bytes:
    return Path(checkpoint_dir, TRIAL_STATE).read_bytes()


def load_rerank_score(store: ArtifactStore, dataset: str, key: str) -> dict[str, Any] | None:
    """A full-length re-rank score stored under ``key`` (a hash of the trained config), or None."""
    parts = layout.tune_parts(dataset, RERANK_SCORES, f"{key}.json")
    if not store.exists(*parts):
        return None
    return json.loads(store.read_text(*parts))


def write_rerank_score(store: ArtifactStore, dataset: str, key: str, score: dict[str, Any]) -> None:
    """``score`` ({"metric", "best_epoch", "values"}) of one full-length re-rank training."""
    store.write_text(json.dumps(score, default=str), *layout.tune_parts(dataset, RERANK_SCORES, f"{key}.json"))
