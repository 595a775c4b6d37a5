"""The evaluate stage: full-ranking metrics of the trained representations on valid and test
(the masking rule of :func:`blast_ray.ranking.scoring.known_items`), written through
:mod:`blast_ray.evaluate.artifacts`.

It also trains and scores the reference models of ``evaluate.baselines`` (pop, bpr, lightgcn) on the
same split, so the report compares the run against baselines it can trust: same users, same items,
same masks. Baselines are selected on VALID like the main model; their test metrics are those of
the best valid epoch (selected on ``evaluate.select_metric``). Results: the baselines table and the manifest's
``extra.baselines`` {model: {"valid.recall@20": ...}}; the training curve of every trained baseline
with its chosen epoch; the per-user test results of every scored model (this run's included), for
the report's curves and activity-quartile table.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from blast_ray.evaluate import artifacts
from blast_ray.ranking.per_user import per_user_metrics
from blast_ray.ranking.scoring import score_splits

log = logging.getLogger("blast_ray.evaluate")


def _flat(valid: dict, test: dict) -> dict[str, float]:
    return {f"{s}.{k}": float(v) for s, m in (("valid", valid), ("test", test)) for k, v in m.items() if k != "n_users"}


def popularity_representations(train) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the popularity ranking as (user (M, 1), item (N, 1)) factors: every user ranks
    items by their train interaction count."""
    pop = np.asarray(train.sum(axis=0)).ravel().astype(np.float32)
    return torch.ones(train.shape[0], 1), torch.from_numpy(pop).unsqueeze(1)


def run_baseline(name: str, train_cfg, data, ks, batch_users: int, select_metric: str = "recall@20") -> dict[str, Any]:
    """Train (if needed) and score one baseline; returns {"metrics": flat, "seconds", "epochs",
    "per_user": (test users, {metric@k: per-user values})} and, for a trained one, "history"
    (per-epoch rows) and "best_epoch" (the epoch whose weights were scored)."""
    t0 = time.perf_counter()
    if name == "pop":
        reps = popularity_representations(data.train)
        valid, test = score_splits(*reps, data, ks, batch_users)
        return {"metrics": _flat(valid, test), "seconds": time.perf_counter() - t0, "epochs": 0,
                "per_user": per_user_metrics(*reps, data, "test", ks, batch_users)}
    from blast_ray.train import EvalPlan, TrainInputs, final_outputs, fit

    cfg = train_cfg.updated(model=name, num_workers=1, use_gpu=False, warm_start_from=None)
    inputs = TrainInputs(data)  # ID-only: the baselines see interactions, nothing else
    plan = EvalPlan(ks=tuple(ks), batch_users=batch_users, select_metric=select_metric)
    state = fit(cfg, inputs, plan)
    _, h_u, f_i, valid, test = final_outputs(cfg, inputs, state, plan)
    per_user = per_user_metrics(torch.from_numpy(h_u), torch.from_numpy(f_i), data, "test", ks, batch_users)
    return {"metrics": _flat(valid, test), "seconds": time.perf_counter() - t0, "epochs": len(state.history),
            "best_epoch": int(state.best_epoch), "history": list(state.history), "per_user": per_user}


def run(ctx, out) -> dict[str, Any]:
    from blast_ray.etl.artifacts import load_interactions
    from blast_ray.train.artifacts import load_embeddings

    ev = ctx.cfg.evaluate
    data = load_interactions(ctx.require("etl"))
    h_u, f_i = (torch.from_numpy(a) for a in load_embeddings(ctx.require("train")))
    t0 = time.perf_counter()
    valid, test = score_splits(h_u, f_i, data, ev.ks, ev.batch_users)
    t_rank = time.perf_counter() - t0
    rows = artifacts.metric_rows(valid=valid, test=test)
    artifacts.write_metrics(out, rows)

    per_user = {ctx.cfg.train.model: per_user_metrics(h_u, f_i, data, "test", ev.ks, ev.batch_users)}
    curves: list[dict[str, Any]] = []
    baselines: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {"full_ranking_seconds": t_rank}
    main_model = ctx.cfg.train.model
    for name in ev.baselines:
        if name == main_model:
            log.debug("evaluate: baseline %s is this run's model; not trained twice", name)
            continue
        res = run_baseline(name, ctx.cfg.train, data, ev.ks, ev.batch_users, ev.select_metric)
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
            "metrics": _flat(valid, test), "extra": {"model": main_model, "baselines": baselines}}
