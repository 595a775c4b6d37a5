"""The train stage: read ETL (+ features, graphs, augmentation when present), fit, write the
train artifacts (:mod:`blast_ray.train.artifacts`: model, final h_u / f_i, history, metrics)."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from blast_ray.ranking.metrics import users_per_block
from blast_ray.train import artifacts
from blast_ray.train.fit import final_outputs, fit
from blast_ray.train.inputs import TrainInputs, allreduce_bytes_per_epoch, model_for, parameter_bytes, step_plan_for
from blast_ray.train.loop import EvalPlan, epoch_cap
from blast_ray.train.source import AugmentUse, StoreInputs, side_inputs
from blast_ray.train.warm_start import load_warm_start

log = logging.getLogger("blast_ray.train")


def _side_inputs(ctx, data) -> TrainInputs:
    """The train inputs of a stage context (see :func:`blast_ray.train.source.side_inputs`)."""
    return side_inputs(ctx.outputs, data, AugmentUse.from_config(ctx.cfg.augment), ctx.cfg.train.model)


def store_inputs(ctx) -> StoreInputs:
    """What each Ray Train worker reads its inputs from: the store and the upstream outputs of ``ctx``."""
    return StoreInputs.from_outputs(ctx.store, ctx.dataset, ctx.outputs, AugmentUse.from_config(ctx.cfg.augment),
                                    ctx.cfg.train.model)


def fresh_model(cfg, inputs):
    """The model a cold run of ``cfg`` starts from (seeded as :func:`train_loop` seeds it): its rows
    initialise the users/items a warm start appends."""
    torch.manual_seed(cfg.seed)
    return model_for(cfg, inputs)


def epoch_plan_extra(cfg, inputs: TrainInputs, model) -> dict[str, Any]:
    """Manifest ``extra.epoch_plan``: steps per epoch, batch per worker, learning rate and the DDP
    all-reduce bytes per epoch of this run (``train.num_workers`` workers)."""
    plan = step_plan_for(cfg, inputs, cfg.num_workers)
    pbytes = parameter_bytes(model)
    return {"positives": plan.n_total, "workers": plan.world, "steps_per_epoch": plan.steps,
            "batch_size": plan.batch_size, "lr": cfg.lr * plan.lr_scale, "lr_scale": plan.lr_scale,
            "parameter_bytes": pbytes, "allreduce_bytes_per_epoch": allreduce_bytes_per_epoch(pbytes, plan.steps, plan.world)}


def run(ctx, out) -> dict[str, Any]:
    from blast_ray.etl.artifacts import load_interactions

    cfg, ev = ctx.cfg.train, ctx.cfg.evaluate
    t0 = time.perf_counter()
    data = load_interactions(ctx.require("etl"))
    inputs = _side_inputs(ctx, data)
    plan = EvalPlan(ks=tuple(ev.ks), batch_users=users_per_block(data.n_items, ev.block_memory_gib, ev.batch_users),
                    select_metric=ev.select_metric)
    warm = None
    if cfg.warm_start_from:  # part of the train section, hence of this output's fingerprint
        warm = load_warm_start(cfg.warm_start_from, fresh_model(cfg, inputs), cfg.model, data.n_users, data.n_items)
    state = fit(cfg, inputs, plan, store=ctx.store, checkpoint_parts=artifacts.checkpoint_parts(ctx.dataset, out.fingerprint),
                init_state=warm.state_dict if warm else None, init_source=cfg.warm_start_from or "",
                source=store_inputs(ctx))  # Ray Train workers read the inputs from the store themselves
    t_fit = time.perf_counter() - t0
    model, h_u, f_i, valid, test = final_outputs(cfg, inputs, state, plan)
    artifacts.write_model(out, model.state_dict(), state.config, data.n_users, data.n_items)
    artifacts.write_embeddings(out, h_u, f_i)
    artifacts.write_history(out, state.history)
    metrics = {f"valid.{k}": v for k, v in valid.items() if k != "n_users"}
    metrics.update({f"test.{k}": v for k, v in test.items() if k != "n_users"})
    metrics["best_epoch"] = int(state.best_epoch)
    artifacts.write_metrics(out, metrics)
    return {
        "row_counts": {"users": data.n_users, "items": data.n_items, "epochs": len(state.history)},
        "timings": {"fit_seconds": t_fit, "total_seconds": time.perf_counter() - t0},
        "extra": {"model": cfg.model, "used": inputs.used_modalities(cfg.model), "num_workers": cfg.num_workers,
                  "select_metric": state.select_metric, "epoch_cap": epoch_cap(state, cfg),
                  "epoch_plan": epoch_plan_extra(cfg, inputs, model),
                  **(warm.manifest_extra() if warm else {"warm_start_from": None, "warm_started": False})},
        "metrics": metrics,
    }

