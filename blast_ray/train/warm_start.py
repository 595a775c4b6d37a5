"""Warm start: initialise a training run from the model of an earlier train output (``train.warm_start_from``).

The nightly job (``jobs.nightly``) points ``train.warm_start_from`` at the train output of the last
promoted run when the id space did not change. Only the model weights are taken; the optimizer,
epoch counter and early-stopping state start fresh. Anything that makes the weights unusable (other
model, other user/item counts, other embedding size or feature dims, a missing/unreadable
``model.pt``) is not an error: the run trains from scratch and says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("blast_ray.train")


@dataclass
class WarmStart:
    """What :func:`load_warm_start` decided. ``state_dict`` is None when it fell back to a cold start."""

    source: str
    state_dict: dict[str, torch.Tensor] | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def used(self) -> bool:
        return self.state_dict is not None

    def manifest_extra(self) -> dict[str, Any]:
        return {"warm_start_from": self.source, "warm_started": self.used, "warm_start_reason": self.reason}


def read_model_file(uri: str) -> dict[str, Any]:
    """The dict saved as ``model.pt`` by the train stage ({"state_dict", "config", "n_users", "n_items"})
    of the train output at ``uri`` (local path or s3://..., read through the ArtifactStore)."""
    from blast_ray.train.artifacts import load_model_uri

    return load_model_uri(uri)


def check_compatible(saved: dict[str, Any], model: torch.nn.Module, model_name: str, n_users: int, n_items: int) -> str:
    """'' when ``saved`` (a model.pt dict) can initialise ``model`` exactly, else the first reason it cannot.

    Compares the model name, the user/item counts, and every parameter/buffer name and shape
    (embedding size, layer count, feature projection dims all show up there).

    >>> import torch
    >>> m = torch.nn.Linear(2, 3)
    >>> check_compatible({"state_dict": m.state_dict(), "config": {"model": "x"}, "n_users": 1, "n_items": 1}, m, "x", 1, 1)
    ''
    >>> check_compatible({"state_dict": m.state_dict(), "config": {"model": "x"}, "n_users": 2, "n_items": 1}, m, "x", 1, 1)
    'n_users differ: saved 2, now 1'
    """
    saved_model = (saved.get("config") or {}).get("model")
    if saved_model != model_name:
        return f"model differs: saved {saved_model!r}, now {model_name!r}"
    for key, now in (("n_users", n_users), ("n_items", n_items)):
        if saved.get(key) != now:
            return f"{key} differ: saved {saved.get(key)}, now {now}"
    want = model.state_dict()
    have = saved.get("state_dict") or {}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    if missing or unexpected:
        return f"parameter names differ: missing {missing[:5]}, unexpected {unexpected[:5]}"
    for name, t in want.items():
        if tuple(have[name].shape) != tuple(t.shape):
            return f"shape of {name} differs: saved {tuple(have[name].shape)}, now {tuple(t.shape)}"
    return ""


def load_warm_start(uri: str, model: torch.nn.Module, model_name: str, n_users: int, n_items: int) -> WarmStart:
    """Read ``uri``/model.pt and check it fits ``model`` (a freshly built, untrained model of this run).

    Returns a :class:`WarmStart`; on any mismatch or read failure ``state_dict`` is None, the reason
    is logged as a warning and recorded, and the caller trains from scratch.
    """
    try:
        saved = read_model_file(uri)
    except Exception as e:  # noqa: BLE001 - a gone or torn previous model must not stop the retrain
        from blast_ray.train.artifacts import MODEL_FILE

        ws = WarmStart(uri, None, f"cannot read {MODEL_FILE}: {type(e).__name__}: {e}")
    else:
        why = check_compatible(saved, model, model_name, n_users, n_items)
        if why:
            ws = WarmStart(uri, None, why)
        else:
            ws = WarmStart(uri, saved["state_dict"], "model, ids and parameter shapes match",
                           {"saved_n_users": saved.get("n_users"), "saved_n_items": saved.get("n_items")})
    if ws.used:
        log.info("warm start from %s: %s", uri, ws.reason)
    else:
        log.warning("warm start from %s not possible (%s): full retrain from a fresh initialisation", uri, ws.reason)
    return ws
