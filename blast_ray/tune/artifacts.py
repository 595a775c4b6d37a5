"""Files of a ``blast tune`` experiment, under ``layout.tune_parts(dataset, experiment)`` (the rest of
that folder is Ray Tune's own: ``tuner.pkl``, ``experiment_state-*.json``, ``trial_<id>/``).

- ``best_config.yaml``: the chosen configuration as a pipeline config (comment header naming the run);
- ``tune_summary.json``: budget, scheduler, search seed, per-trial values / best validation metric /
  reported keys, the best trial, what it keeps, the final run's metrics (or null);
- ``train_state.pt`` inside each trial checkpoint: the training state of the last epoch (resume).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blast_ray.store import ArtifactStore, layout

BEST_CONFIG = "best_config.yaml"
SUMMARY = "tune_summary.json"
TRIAL_STATE = "train_state.pt"


def write_best_config(store: ArtifactStore, dataset: str, experiment: str, text: str) -> None:
    store.write_text(text, *layout.tune_parts(dataset, experiment, BEST_CONFIG))


def write_summary(store: ArtifactStore, dataset: str, experiment: str, summary: dict[str, Any]) -> None:
    store.write_text(json.dumps(summary, indent=1, default=str), *layout.tune_parts(dataset, experiment, SUMMARY))


def load_summary(store: ArtifactStore, dataset: str, experiment: str) -> dict[str, Any]:
    return json.loads(store.read_text(*layout.tune_parts(dataset, experiment, SUMMARY)))


def write_trial_state(checkpoint_dir: str | Path, state: bytes) -> None:
    """The serialized training state into a (temporary) folder that becomes a Tune checkpoint."""
    Path(checkpoint_dir, TRIAL_STATE).write_bytes(state)


def read_trial_state(checkpoint_dir: str | Path) -> bytes:
    return Path(checkpoint_dir, TRIAL_STATE).read_bytes()
