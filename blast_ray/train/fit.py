"""The training entry point: one process (the loop directly, with store checkpoints) or Ray Train
(``cfg.num_workers > 1``, or one worker with ``train.ray_train_single_worker``), then the final
model at its best validation epoch.

Layering: :mod:`inputs` (what a worker reads) -> :mod:`loop` (epochs, :class:`TrainState`) ->
:mod:`checkpoints` (serialization) -> :mod:`ray_trainer` (the Ray wrapper, imported only when
Ray Train is used) -> this module.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from blast_ray.models.factory import PRUNED_MODELS
from blast_ray.models.graph_backend import get_backend
from blast_ray.train import artifacts
from blast_ray.train.inputs import TrainInputs, graph_inputs, model_for, step_plan_for
from blast_ray.train.loop import EvalPlan, TrainState, epoch_cap, train_loop, validate

log = logging.getLogger("blast_ray.train")


def fit(
    cfg,
    inputs: TrainInputs,
    plan: EvalPlan = EvalPlan(),
    *,
    store=None,
    checkpoint_parts: tuple[str, ...] | None = None,
    max_epochs: int | None = None,
    init_state: dict[str, Any] | None = None,
    init_source: str = "",
    source=None,
) -> TrainState:
    """Train ``cfg.model``; resumes from the latest checkpoint under ``checkpoint_parts`` (see
    :func:`blast_ray.train.artifacts.checkpoint_parts`) if any, else starts from ``init_state``
    (warm start weights, see :func:`blast_ray.train.warm_start.load_warm_start`) when given, else
    from a fresh initialisation. ``plan``: validation cutoffs and the selection metric.

    num_workers == 1: plain single process (checkpoints through :class:`StoreCheckpoints`), unless
    ``train.ray_train_single_worker``; num_workers > 1 (or that option): Ray Train
    (``ray_trainer.fit_ray``) with its checkpoint API in the same place (one checkpoint and resume
    path for any worker count).
    source: a :class:`~blast_ray.train.source.StoreInputs` naming ``inputs`` in the store: each Ray
    Train worker then builds its inputs from the store instead of receiving ``inputs`` pickled
    through the trainer config (None: ``inputs`` are shipped; tests and in-memory callers).
    Returns the final :class:`TrainState` (``best_state`` = weights of the best validation epoch).
    A run that ran all ``train.epochs`` while still improving logs a WARNING (see :func:`epoch_cap`).
    """
    plan.select  # noqa: B018 - a bad evaluate.select_metric fails here, before any epoch
    step_plan_for(cfg, inputs, cfg.num_workers)  # a batch above train.max_batch_size fails here, before Ray starts
    used = inputs.used_modalities(cfg.model)
    log.debug("training %s on %d users x %d items; side inputs used: %s%s", cfg.model, inputs.data.n_users,
             inputs.data.n_items, used, " (ID-only)" if cfg.model in PRUNED_MODELS and not (used["features"] or used["item_graph"] or used["user_graph"]) else "")
    if uses_ray_train(cfg):
        from blast_ray.train.ray_trainer import fit_ray

        if store is None or checkpoint_parts is None:
            why = "multi-worker training" if cfg.num_workers > 1 else "train.ray_train_single_worker"
            raise ValueError(f"{why} needs a store and checkpoint_parts for Ray Train checkpoints")
        state = fit_ray(cfg, inputs, storage_path=store.path(*checkpoint_parts[:-1]), name=checkpoint_parts[-1],
                        storage_filesystem=store.fs, plan=plan, init_state=init_state, init_source=init_source,
                        source=source, max_epochs=max_epochs)
    else:
        torch.set_num_threads(max(1, torch.get_num_threads()))
        ckpt = resume = None
        if store is not None and checkpoint_parts is not None:
            from blast_ray.train.checkpoints import StoreCheckpoints

            ckpt = StoreCheckpoints(store, *checkpoint_parts, artifacts.SINGLE_PROCESS_DIR)
            resume = ckpt.load_latest()
        state = train_loop(cfg, inputs, plan, start=resume, init_weights=init_state, init_source=init_source,
                           on_epoch=ckpt.save if ckpt else None, max_epochs=max_epochs)
    cap = epoch_cap(state, cfg)
    if cap["still_improving"]:
        log.warning("train: stopped at train.epochs=%d while valid %s was still improving (best epoch %d is the last "
                    "evaluated one): raise train.epochs", cfg.epochs, state.select_metric, cap["best_epoch"])
    return state


def uses_ray_train(cfg) -> bool:
    """Whether :func:`fit` runs ``cfg`` on Ray Train: several workers, or one with
    ``train.ray_train_single_worker`` (a config without that key: False)."""
    return int(cfg.num_workers) > 1 or bool(getattr(cfg, "ray_train_single_worker", False))


def final_outputs(cfg, inputs: TrainInputs, state: TrainState, plan: EvalPlan = EvalPlan()):
    """Model at its best validation epoch -> (model, h_u (M, d), f_i (N, d), valid metrics, test metrics)."""
    model = model_for(cfg, inputs)
    model.load_state_dict(state.final_weights())
    backend = get_backend(cfg.graph_backend)
    ks = tuple(plan.ks)  # the reported cutoffs (validation during training also has the selection k)
    full = graph_inputs(cfg, inputs, backend, "cpu", epoch=None)  # built once for the three passes
    valid = validate(model, cfg, inputs, "valid", ks, plan.batch_users, "cpu", backend, full)
    test = validate(model, cfg, inputs, "test", ks, plan.batch_users, "cpu", backend, full)
    model.eval()
    with torch.no_grad():
        h_u, f_i = model.representations(full)
    return model, np.asarray(h_u.detach().numpy()), np.asarray(f_i.detach().numpy()), valid, test
