"""Warm start: initialise a training run from the model of an earlier train output (``train.warm_start_from``).

The nightly job (``jobs.nightly``) points ``train.warm_start_from`` at the train output of the last
promoted run when every old raw id kept its index (the ETL's append-only id dictionary,
``etl.id_dictionary_from``). Only the model weights are taken; the optimizer, epoch counter and
early-stopping state start fresh.

Growth: users/items appended since the saved model (ids ``>= saved n_users`` / ``n_items``) get
rows of the fresh model of this run (the constructor's initialisation, seeded like a cold run), the
saved rows keep their trained values (:func:`extend_rows`). The row correspondence (old index = same
raw id) is the id dictionary's guarantee, checked by ``jobs.nightly`` before it asks for a warm start.

Anything else that makes the weights unusable (other model, FEWER users/items than saved, other
embedding size or feature dims, a missing/unreadable ``model.pt``) is not an error: the run trains
from scratch and says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("blast_ray.train")

# The id-indexed embedding tables of every model (models/bpr.py and its subclasses): parameter name ->
# which count sizes its rows. Only these may grow between a saved model and this run.
ROW_TABLES = {"user_emb": "n_users", "item_emb": "n_items"}


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
        return {"warm_start_from": self.source, "warm_started": self.used, "warm_start_reason": self.reason,
                **({"warm_start_new_rows": {"users": self.details["new_users"], "items": self.details["new_items"]}}
                   if "new_users" in self.details else {})}


def read_model_file(uri: str) -> dict[str, Any]:
    """The dict saved as ``model.pt`` by the train stage ({"state_dict", "config", "n_users", "n_items"})
    of the train output at ``uri`` (local path or s3://..., read through the ArtifactStore)."""
    from blast_ray.train.artifacts import load_model_uri

    return load_model_uri(uri)


def check_compatible(saved: dict[str, Any], model: torch.nn.Module, model_name: str, n_users: int, n_items: int) -> str:
    """'' when ``saved`` (a model.pt dict) can initialise ``model``, else the first reason it cannot.

    Compares the model name, the user/item counts (this run may have MORE users/items than saved:
    appended ids, see :func:`extend_rows`; fewer is refused), and every parameter/buffer name and
    shape (embedding size, layer count, feature projection dims all show up there; the id tables of
    :data:`ROW_TABLES` may differ only in their row count, by the growth of their count).

    >>> import torch
    >>> m = torch.nn.Linear(2, 3)
    >>> check_compatible({"state_dict": m.state_dict(), "config": {"model": "x"}, "n_users": 1, "n_items": 1}, m, "x", 1, 1)
    ''
    >>> check_compatible({"state_dict": m.state_dict(), "config": {"model": "x"}, "n_users": 2, "n_items": 1}, m, "x", 1, 1)
    'n_users shrank: saved 2, now 1 (old ids must keep their index; the id dictionary only grows)'
    """
    saved_model = (saved.get("config") or {}).get("model")
    if saved_model != model_name:
        return f"model differs: saved {saved_model!r}, now {model_name!r}"
    now_counts = {"n_users": n_users, "n_items": n_items}
    for key, now in now_counts.items():
        if not isinstance(saved.get(key), int):
            return f"{key} missing in the saved model"
        if saved[key] > now:
            return f"{key} shrank: saved {saved[key]}, now {now} (old ids must keep their index; the id dictionary only grows)"
    want = model.state_dict()
    have = saved.get("state_dict") or {}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    if missing or unexpected:
        return f"parameter names differ: missing {missing[:5]}, unexpected {unexpected[:5]}"
    for name, t in want.items():
        old, new = tuple(have[name].shape), tuple(t.shape)
        if name in ROW_TABLES:
            count = ROW_TABLES[name]
            if old[1:] != new[1:] or old[0] != saved[count] or new[0] != now_counts[count]:
                return f"shape of {name} differs: saved {old}, now {new}"
        elif old != new:
            return f"shape of {name} differs: saved {old}, now {new}"
    return ""


def extend_rows(saved_state: dict[str, torch.Tensor], fresh_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The warm start weights for a run with as many or more users/items than the saved model.

    saved_state: the saved model's state dict (checked by :func:`check_compatible`); fresh_state:
    the state dict of this run's freshly built model (its constructor's initialisation). Returns
    (state dict, {table: rows appended}): every tensor is the saved one, except the id tables of
    :data:`ROW_TABLES`, whose first ``saved rows`` come from ``saved_state`` and the appended rows
    from ``fresh_state`` (exactly what a cold run would start them from). Pure; copies, never aliases.

    >>> import torch
    >>> out, grown = extend_rows({"user_emb": torch.ones(2, 3)}, {"user_emb": torch.zeros(4, 3)})
    >>> out["user_emb"].sum(1).tolist(), grown
    ([3.0, 3.0, 0.0, 0.0], {'user_emb': 2})
    """
    out: dict[str, torch.Tensor] = {}
    grown: dict[str, int] = {}
    for name, fresh in fresh_state.items():
        old = saved_state[name]
        if name in ROW_TABLES and old.shape[0] < fresh.shape[0]:
            t = fresh.detach().clone()
            t[: old.shape[0]] = old.to(t.dtype)
            out[name], grown[name] = t, int(fresh.shape[0] - old.shape[0])
        else:
            out[name] = old.detach().clone()
    return out, grown


def load_warm_start(uri: str, model: torch.nn.Module, model_name: str, n_users: int, n_items: int) -> WarmStart:
    """Read ``uri``/model.pt and check it fits ``model`` (a freshly built, untrained model of this
    run, initialised as a cold run would be: its rows fill the appended users/items).

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
            state, grown = extend_rows(saved["state_dict"], model.state_dict())
            added = {"users": n_users - saved["n_users"], "items": n_items - saved["n_items"]}
            reason = "model, ids and parameter shapes match"
            if any(added.values()):
                reason += f"; {added['users']} new users and {added['items']} new items start from a fresh initialisation"
            ws = WarmStart(uri, state, reason, {"saved_n_users": saved["n_users"], "saved_n_items": saved["n_items"],
                                                "new_users": added["users"], "new_items": added["items"]})
    if ws.used:
        log.info("warm start from %s: %s", uri, ws.reason)
    else:
        log.warning("warm start from %s not possible (%s): full retrain from a fresh initialisation", uri, ws.reason)
    return ws
