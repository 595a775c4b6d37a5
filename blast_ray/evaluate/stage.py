"""The evaluate stage: full-ranking metrics of the trained representations on valid and test
(the masking rule of :func:`blast_ray.ranking.scoring.known_items`), written through
:mod:`blast_ray.evaluate.artifacts`.

It also trains and scores the reference models of ``evaluate.baselines`` (pop, bpr, lightgcn,
freedom) on the same split, so the report compares the run against baselines it can trust: same
users, same items, same masks. bpr and lightgcn see the interactions only; freedom also the run's
item features and item graph S_I (the committed features and graphs outputs, as the main model
reads them; no user graph, no OT pairs). A trained baseline uses the train section's hyperparameters unless
``evaluate.baseline_train.<model>`` gives its own (the tuned values of ``blast tune``).
Baselines are selected on VALID like the main model; their test metrics are those of
the best valid epoch (selected on ``evaluate.select_metric``). Results: the baselines table and the manifest's
``extra.baselines`` {model: {"valid.recall@20": ...}}; the training curve of every trained baseline
with its chosen epoch; the per-user test results of every scored model (this run's included), for
the report's curves and activity-quartile table.

Scale: the evaluated users are scored in ``evaluate.num_shards`` Ray tasks (per-shard metric sums
added: :mod:`blast_ray.evaluate.sharded`), in blocks sized from ``evaluate.block_memory_gib``; the
trained baselines go through the main model's training path (``train.num_workers``, ``use_gpu``,
checkpoints beside the run's own).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from blast_ray.evaluate import artifacts
from blast_ray.evaluate.sharded import score_splits_sharded
from blast_ray.ranking.metrics import users_per_block
from blast_ray.ranking.per_user import per_user_metrics

log = logging.getLogger("blast_ray.evaluate")


def _flat(valid: dict, test: dict) -> dict[str, float]:
    return {f"{s}.{k}": float(v) for s, m in (("valid", valid), ("test", test)) for k, v in m.items() if k != "n_users"}


def popularity_representations(train) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the popularity ranking as (user (M, 1), item (N, 1)) factors: every user ranks
    items by their train interaction count."""
    pop = np.asarray(train.sum(axis=0)).ravel().astype(np.float32)
    return torch.ones(train.shape[0], 1), torch.from_numpy(pop).unsqueeze(1)


def block_users(ev, n_items: int) -> int:
    """Users per full-ranking block: as many as ``evaluate.block_memory_gib`` holds (users x
    ``n_items`` float32 scores), capped by ``evaluate.batch_users`` when that is > 0."""
    return users_per_block(n_items, ev.block_memory_gib, ev.batch_users)


# baselines that read side inputs (item features, item graph) besides the interactions
# (freedom: the item graph is required; the item features are used when the run has them, as the
# train stage uses them)
SIDE_INPUT_BASELINES = ("freedom",)


def run_baseline(name: str, train_cfg, data, ks, batch_users: int, select_metric: str = "recall@20", *,
                 num_shards: int = 1, store=None, checkpoint_parts: tuple[str, ...] | None = None,
                 source=None, inputs=None) -> dict[str, Any]:
    """Train (if needed) and score one baseline; returns {"metrics": flat, "seconds", "epochs",
    "per_user": (test users, {metric@k: per-user values})} and, for a trained one, "history"
    (per-epoch rows) and "best_epoch" (the epoch whose weights were scored).

    A trained baseline goes through the main model's training path with ``train_cfg`` (the train
    section with the baseline's ``evaluate.baseline_train`` values on top:
    :meth:`EvaluateConfig.baseline_train_config`; ``train.num_workers`` Ray Train workers, ``train.use_gpu``, checkpoints under
    ``checkpoint_parts`` so an interrupted evaluate resumes it), only the model swapped, never
    warm-started. Scored by the trainer's final scoring (``batch_users`` per block); the
    popularity ranking like the main model (``num_shards``). inputs: the ``TrainInputs`` it trains
    on (None: ID-only, ``TrainInputs(data)``; freedom's carry the features and graphs: see
    :func:`baseline_inputs`). source: where Ray Train workers read the same inputs, as the main
    model's do (a ``StoreInputs``; the evaluate stage passes it); None ships them in the workers'
    config.
    """
    t0 = time.perf_counter()
    if name == "pop":
        reps = popularity_representations(data.train)
        valid, test = score_splits_sharded(*reps, data, ks, batch_users, num_shards)
        return {"metrics": _flat(valid, test), "seconds": time.perf_counter() - t0, "epochs": 0,
                "per_user": per_user_metrics(*reps, data, "test", ks, batch_users)}
    from blast_ray.train import EvalPlan, TrainInputs, final_outputs, fit

    cfg = train_cfg.updated(model=name, warm_start_from=None)
    inputs = inputs if inputs is not None else TrainInputs(data)  # default ID-only: interactions, nothing else
    plan = EvalPlan(ks=tuple(ks), batch_users=batch_users, select_metric=select_metric)
    state = fit(cfg, inputs, plan, store=store, checkpoint_parts=checkpoint_parts, source=source)
    _, h_u, f_i, valid, test = final_outputs(cfg, inputs, state, plan)  # the trainer's own scoring, same rule
    per_user = per_user_metrics(torch.from_numpy(h_u), torch.from_numpy(f_i), data, "test", ks, batch_users)
    return {"metrics": _flat(valid, test), "seconds": time.perf_counter() - t0, "epochs": len(state.history),
            "best_epoch": int(state.best_epoch), "num_workers": int(cfg.num_workers), "use_gpu": bool(cfg.use_gpu),
            "history": list(state.history), "per_user": per_user}


def check_baseline_inputs(ctx, names) -> None:
    """Before any baseline trains: a side-input baseline (freedom) among ``names`` without a graphs
    output is a one-line error that says how to get it."""
    for name in names:
        if name in SIDE_INPUT_BASELINES and "graphs" not in ctx.outputs:
            raise RuntimeError(f"evaluate.baselines lists {name}, which trains on the item graph: it needs the 'graphs' "
                               "output, which is not in this run and has no committed output for this config; add graphs "
                               f"to --stages or remove {name} from evaluate.baselines")


def baseline_inputs(ctx, name: str, data):
    """``(inputs, source)`` baseline ``name`` trains on: None (ID-only) and a ``StoreInputs`` naming
    the etl output only, or for a side-input baseline (freedom) the ``TrainInputs`` of the committed
    graphs output and, when present, the features output too, only the parts the baseline reads
    (freedom: item features and S_I; never the user side or the augmentation;
    :func:`check_baseline_inputs` first)."""
    from blast_ray.train.source import AugmentUse, StoreInputs, side_inputs

    stages = {"etl": ctx.require("etl")}
    if name in SIDE_INPUT_BASELINES:
        check_baseline_inputs(ctx, [name])
        stages.update({s: ctx.outputs[s] for s in ("features", "graphs") if s in ctx.outputs})
    # the baselines' Ray Train workers load the same inputs from the store, as the main model's do
    source = StoreInputs.from_outputs(ctx.store, ctx.dataset, stages, AugmentUse(), name)
    return (side_inputs(stages, data, AugmentUse(), name) if len(stages) > 1 else None), source


def run(ctx, out) -> dict[str, Any]:
    from blast_ray.etl.artifacts import load_interactions
    from blast_ray.store import layout
    from blast_ray.train.artifacts import load_embeddings

    ev = ctx.cfg.evaluate
    check_baseline_inputs(ctx, [b for b in ev.baselines if b != ctx.cfg.train.model])
    data = load_interactions(ctx.require("etl"))
    h_u, f_i = (torch.from_numpy(a) for a in load_embeddings(ctx.require("train")))
    per_block = block_users(ev, data.n_items)
    t0 = time.perf_counter()
    valid, test = score_splits_sharded(h_u, f_i, data, ev.ks, per_block, ev.num_shards)
    t_rank = time.perf_counter() - t0
    rows = artifacts.metric_rows(valid=valid, test=test)
    artifacts.write_metrics(out, rows)

    per_user = {ctx.cfg.train.model: per_user_metrics(h_u, f_i, data, "test", ev.ks, per_block)}
    curves: list[dict[str, Any]] = []
    baselines: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {"full_ranking_seconds": t_rank}
    main_model = ctx.cfg.train.model
    unused = sorted(set(ev.baseline_train) - (set(ev.baselines) - {main_model}))
    if unused:
        log.info("evaluate: evaluate.baseline_train entries not used (model not a trained baseline of this run): %s",
                 ", ".join(unused))
    for name in ev.baselines:
        if name == main_model:
            log.debug("evaluate: baseline %s is this run's model; not trained twice", name)
            continue
        inputs, source = baseline_inputs(ctx, name, data) if name != "pop" else (None, None)
        res = run_baseline(name, ev.baseline_train_config(name, ctx.cfg.train), data, ev.ks, per_block, ev.select_metric,
                           num_shards=ev.num_shards, store=ctx.store,
                           checkpoint_parts=layout.checkpoint_parts(ctx.dataset, out.fingerprint, f"baseline-{name}"),
                           source=source, inputs=inputs)
        baselines[name] = res["metrics"]
        per_user[name] = res["per_user"]
        if res.get("history"):
            curves += artifacts.history_rows(name, res["history"], res["best_epoch"])
        timings[f"baseline_{name}_seconds"] = round(res["seconds"], 3)
        log.debug("evaluate: baseline %-8s valid recall@20 %.4f test recall@20 %.4f (%d epochs, %.1fs)", name,
                 res["metrics"].get("valid.recall@20", float("nan")), res["metrics"].get("test.recall@20", float("nan")),
                 res["epochs"], res["seconds"])
    if baselines:
        artifacts.write_baselines(out, baselines)
    if curves:
        artifacts.write_baseline_history(out, curves)
    artifacts.write_per_user(out, per_user)
    return {"row_counts": {"metrics": len(rows), "baselines": len(baselines),
                           "per_user_test": sum(len(u) for u, _ in per_user.values())}, "timings": timings,
            "metrics": _flat(valid, test),
            "extra": {"model": main_model, "baselines": baselines, "block_users": per_block, "num_shards": ev.num_shards,
                      "baseline_training": {"num_workers": ctx.cfg.train.num_workers, "use_gpu": ctx.cfg.train.use_gpu,
                                            # each trained baseline's own values (evaluate.baseline_train) over the train section's
                                            "overrides": {b: hp.train_changes() for b, hp in ev.baseline_train.items()
                                                          if b in baselines}}}}
