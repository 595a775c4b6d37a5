"""The evaluate stage: full-ranking metrics of the trained representations on valid and test
(valid: train masked; test: train + valid masked, as MMRec), written to metrics.parquet.

It also trains and scores the reference models of ``evaluate.baselines`` (pop, bpr, lightgcn) on the
same split, so the report compares the run against baselines it can trust: same users, same items,
same masks. Baselines are selected on VALID like the main model; their test metrics are those of
the best valid epoch. Results: ``baselines.parquet`` (model, split, metric, value) and the manifest's
``extra.baselines`` {model: {"valid.recall@20": ...}}.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from blast_ray.evaluate.metrics import evaluate_ranking

log = logging.getLogger("blast_ray.evaluate")


def _flat(valid: dict, test: dict) -> dict[str, float]:
    return {f"{s}.{k}": float(v) for s, m in (("valid", valid), ("test", test)) for k, v in m.items() if k != "n_users"}


def popularity_representations(train) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the popularity ranking as (user (M, 1), item (N, 1)) factors: every user ranks
    items by their train interaction count."""
    pop = np.asarray(train.sum(axis=0)).ravel().astype(np.float32)
    return torch.ones(train.shape[0], 1), torch.from_numpy(pop).unsqueeze(1)


def score_split(h_u: torch.Tensor, f_i: torch.Tensor, data, ks, batch_users: int) -> tuple[dict, dict]:
    """(valid, test) metrics: valid masks train, test masks train + valid."""
    valid = evaluate_ranking(h_u, f_i, data.valid, data.train, tuple(ks), batch_users)
    test = evaluate_ranking(h_u, f_i, data.test, (data.train + data.valid).tocsr(), tuple(ks), batch_users)
    return valid, test


def run_baseline(name: str, train_cfg, data, ks, batch_users: int) -> dict[str, Any]:
    """Train (if needed) and score one baseline; returns {"metrics": flat, "seconds", "epochs"}."""
    t0 = time.perf_counter()
    if name == "pop":
        valid, test = score_split(*popularity_representations(data.train), data, ks, batch_users)
        return {"metrics": _flat(valid, test), "seconds": time.perf_counter() - t0, "epochs": 0}
    from blast_ray.train.trainer import TrainInputs, final_outputs, fit

    cfg = train_cfg.updated(model=name, num_workers=1, use_gpu=False, warm_start_from=None)
    inputs = TrainInputs(data)  # ID-only: the baselines see interactions, nothing else
    state = fit(cfg, inputs, ks=tuple(ks), batch_users=batch_users)
    _, _, _, valid, test = final_outputs(cfg, inputs, state, tuple(ks), batch_users)
    return {"metrics": _flat(valid, test), "seconds": time.perf_counter() - t0, "epochs": len(state["history"]),
            "best_epoch": int(state["best_epoch"])}


def run(ctx, out) -> dict[str, Any]:
    from blast_ray.data import load_interactions
    from blast_ray.train.stage import load_embeddings

    ev = ctx.cfg.evaluate
    data = load_interactions(ctx.require("etl"))
    h_u, f_i = (torch.from_numpy(a) for a in load_embeddings(ctx.require("train")))
    t0 = time.perf_counter()
    valid, test = score_split(h_u, f_i, data, ev.ks, ev.batch_users)
    t_rank = time.perf_counter() - t0
    rows = [{"split": s, "metric": k, "value": float(v)} for s, m in (("valid", valid), ("test", test)) for k, v in m.items()]
    out.store.write_table(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False), *out.parts, "metrics.parquet")

    baselines: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {"full_ranking_seconds": t_rank}
    main_model = ctx.cfg.train.model
    for name in ev.baselines:
        if name == main_model:
            log.debug("evaluate: baseline %s is this run's model; not trained twice", name)
            continue
        res = run_baseline(name, ctx.cfg.train, data, ev.ks, ev.batch_users)
        baselines[name] = res["metrics"]
        timings[f"baseline_{name}_seconds"] = round(res["seconds"], 3)
        log.debug("evaluate: baseline %-8s valid recall@20 %.4f test recall@20 %.4f (%d epochs, %.1fs)", name,
                 res["metrics"].get("valid.recall@20", float("nan")), res["metrics"].get("test.recall@20", float("nan")),
                 res["epochs"], res["seconds"])
    if baselines:
        brows = [{"model": m, "split": k.split(".", 1)[0], "metric": k.split(".", 1)[1], "value": v}
                 for m, flat in baselines.items() for k, v in flat.items()]
        out.store.write_table(pa.Table.from_pandas(pd.DataFrame(brows), preserve_index=False), *out.parts, "baselines.parquet")
    return {"row_counts": {"metrics": len(rows), "baselines": len(baselines)}, "timings": timings,
            "metrics": _flat(valid, test), "extra": {"model": main_model, "baselines": baselines}}
