"""Paper baselines on real Amazon Baby (LATTICE split): BPR-MF and LightGCN with the paper's
settings (d=64, Adam lr 1e-3, batch 2048, L2 1e-4, LightGCN 2 layers... MMRec defaults), early
stopping on valid Recall@20 (patience 20), test metrics at the best valid epoch.
Targets (paper Table 2): BPR 0.0607, LightGCN 0.0754 test Recall@20.

The L2 weight is chosen the way MMRec's harness chooses it: a small grid (``--l2-grid``), each
point trained to early stopping, the point with the best VALID Recall@20 kept; its test figures are
reported (never selected on test).

Usage: .venv/bin/python benchmarks/baby_baselines.py [--models bpr,lightgcn] [--epochs 1000] [--seed 2024]
       [--l2-grid 1e-4] [--l2-grid-bpr 1e-5,1e-4,1e-3]
Prints one line `RESULT {json}` at the end (machine, seeds, wall time, epochs, metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time

import torch

from blast_ray.config import TrainConfig, shared_data_dir
from blast_ray.etl.readers import read_lattice_split
from blast_ray.train import EvalPlan, TrainInputs, final_outputs, fit

PAPER = {"bpr": 0.0607, "lightgcn": 0.0754}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="bpr,lightgcn")
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--l2-grid", default="1e-4", help="L2 weights tried for every model (comma list), selected on valid")
    ap.add_argument("--l2-grid-bpr", default=None, help="override of --l2-grid for bpr")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    data = read_lattice_split(shared_data_dir() / "amazon-baby-5core")
    result = {"machine": platform.node(), "cpus": os.cpu_count(), "threads": args.threads, "seed": args.seed}
    for model in args.models.split(","):
        grid = [float(x) for x in ((args.l2_grid_bpr if model == "bpr" and args.l2_grid_bpr else args.l2_grid).split(","))]
        t0 = time.perf_counter()
        best = None
        for l2 in grid:
            cfg = TrainConfig(model=model, epochs=args.epochs, patience=args.patience, seed=args.seed, lr=1e-3,
                              batch_size=2048, l2_weight=l2, n_layers_ui=2, embedding_dim=64)
            state = fit(cfg, TrainInputs(data), EvalPlan(ks=(10, 20)))
            _, _, _, valid, test = final_outputs(cfg, TrainInputs(data), state, EvalPlan(ks=(10, 20), batch_users=4096))
            print(json.dumps({"model": model, "l2": l2, "epochs": len(state.history), "best_epoch": state.best_epoch,
                              "valid.recall@20": valid["recall@20"], "test.recall@20": test["recall@20"]}), flush=True)
            if best is None or valid["recall@20"] > best[1]["recall@20"]:
                best = (l2, valid, test, state)
        l2, valid, test, state = best
        result.update({
            f"{model}.wall_seconds": round(time.perf_counter() - t0, 1),
            f"{model}.l2_grid": ",".join(map(str, grid)),
            f"{model}.l2_selected_on_valid": l2,
            f"{model}.epochs": len(state.history),
            f"{model}.best_epoch": state.best_epoch,
            f"{model}.valid.recall@20": valid["recall@20"],
            f"{model}.test.recall@20": test["recall@20"],
            f"{model}.test.ndcg@20": test["ndcg@20"],
            f"{model}.paper.recall@20": PAPER.get(model),
            f"{model}.within_5pct": abs(test["recall@20"] - PAPER[model]) <= 0.05 * PAPER[model] if model in PAPER else None,
        })
        print(json.dumps({k: v for k, v in result.items() if k.startswith(model)}), flush=True)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
