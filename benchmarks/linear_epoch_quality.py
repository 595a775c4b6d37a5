"""Quality of the bounded-steps epoch (issue 12 item 1) on real Amazon Baby: test Recall@20 at the
best VALID epoch, today's rule (a fixed batch: as many steps as positives / batch, every step a
whole-graph propagation) against the new one (at most ``train.max_steps_per_epoch`` steps, the batch
grown with the data, the learning rate scaled by ``train.lr_batch_scaling``), same seed, same
epoch cap, same patience.

Variants (``--variants``, comma list):
  old            max_steps_per_epoch = 10**9: the batch stays train.batch_size (today's figure)
  new            the config defaults (max_steps_per_epoch 50 on Baby: batch 2,048 -> 2,394)
  new_RULE       the default cap with lr rule RULE (sqrt | linear | none), max_lr_scale 8
  capN_RULE      a forced cap of N steps (the batch grows ~positives / N: what happens at dump
                 scale) with lr rule RULE (sqrt | linear | none), e.g. cap10_sqrt, cap10_linear

Baby here has no side information (README of the shared data), so BLAST runs ID-only (pruned
LightGCN propagation with BLAST's loss), as benchmarks/train_throughput.py runs it.

Usage: .venv/bin/python benchmarks/linear_epoch_quality.py [--models lightgcn,blast] [--epochs 60]
       [--patience 20] [--seed 2024] [--variants old,new,cap10_sqrt,cap10_linear]
Each finished run is merged into ``--out`` (default benchmarks/results/linear_epoch_quality.json;
several processes may write it, one per model); prints `RESULT {json}` (this process's runs and the
summary of everything in the file: ``<model>.recall_delta.<variant>`` = test Recall@20 / old - 1,
``baby.recall_delta_min`` over the models for the run of the current defaults: ``new`` when its
recorded lr rule is the default one, else ``new_<default rule>``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from blast_ray.config import TrainConfig, shared_data_dir
from blast_ray.etl.readers import read_lattice_split
from blast_ray.train import EvalPlan, TrainInputs, final_outputs, fit
from blast_ray.train.inputs import step_plan_for

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "linear_epoch_quality.json"


def variant_overrides(name: str) -> dict:
    """Train-config overrides of a variant name (see the module docstring)."""
    if name == "old":
        return {"max_steps_per_epoch": 10**9}
    if name == "new":
        return {}
    if name.startswith("new_"):  # the default cap with another lr rule
        return {"lr_batch_scaling": name[4:], "max_lr_scale": 8.0}
    if name.startswith("cap"):
        steps, rule = name[3:].split("_")
        return {"max_steps_per_epoch": int(steps), "lr_batch_scaling": rule, "max_lr_scale": 8.0}
    raise SystemExit(f"unknown variant {name!r}: old | new | capN_RULE (e.g. cap10_sqrt)")


def summarize(runs: dict) -> dict:
    """Deltas against 'old' per model and variant; baby.recall_delta_min over models for 'new'."""
    out = {}
    for model, by_variant in runs.items():
        old = by_variant.get("old")
        for v, r in by_variant.items():
            if old and v != "old":
                out[f"{model}.recall_delta.{v}"] = r["test.recall@20"] / old["test.recall@20"] - 1
    # the run of the CURRENT defaults: 'new' when its recorded lr rule is still the default, else new_<rule>
    rule = TrainConfig().lr_batch_scaling

    def default_key(model: str) -> str:
        new = runs[model].get("new")
        return "new" if new and new.get("lr_rule") == rule else f"new_{rule}"

    news = [out[f"{m}.recall_delta.{default_key(m)}"] for m in ("lightgcn", "blast")
            if m in runs and f"{m}.recall_delta.{default_key(m)}" in out]
    out["baby.recall_delta_min"] = min(news) if len(news) == 2 else None
    return out


def merge_into(path: Path, meta: dict, model: str, variant: str, row: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = json.loads(path.read_text()) if path.exists() else {}
        doc.setdefault("runs", {}).setdefault(model, {})[variant] = row
        doc.setdefault("meta", {}).update(meta)
        doc["summary"] = summarize(doc["runs"])
        path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    return doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="lightgcn,blast")
    ap.add_argument("--variants", default="old,new,cap10_sqrt,cap10_linear")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    data = read_lattice_split(shared_data_dir() / "amazon-baby-5core")
    meta = {"machine": platform.node(), "cpus": os.cpu_count(), "threads": args.threads, "seed": args.seed,
            "epochs_cap": args.epochs, "patience": args.patience, "dataset": "amazon-baby-5core (LATTICE split)",
            "note": "BLAST ID-only (no side information for Baby here); same seed, epoch cap and patience both ways"}
    mine = {}
    doc = {}
    for model in args.models.split(","):
        for variant in args.variants.split(","):
            cfg = TrainConfig(model=model, epochs=args.epochs, patience=args.patience, seed=args.seed,
                              **variant_overrides(variant))
            inputs = TrainInputs(data)
            steps = step_plan_for(cfg, inputs, 1)
            t0 = time.perf_counter()
            state = fit(cfg, inputs, EvalPlan(ks=(20,)))
            wall = time.perf_counter() - t0
            _, _, _, valid, test = final_outputs(cfg, inputs, state, EvalPlan(ks=(20,)))
            row = {"valid.recall@20": float(valid["recall@20"]), "test.recall@20": float(test["recall@20"]),
                   "best_epoch": int(state.best_epoch), "epochs_run": len(state.history),
                   "steps_per_epoch": steps.steps, "batch_size": steps.batch_size, "lr": cfg.lr * steps.lr_scale,
                   "lr_rule": cfg.lr_batch_scaling, "train_s_per_epoch": float(np.median([r["train_seconds"] for r in state.history])),
                   "wall_s": wall}
            print(json.dumps({"model": model, "variant": variant, **row}), flush=True)
            mine[f"{model}.{variant}"] = row
            doc = merge_into(args.out, meta, model, variant, row)
    print("RESULT " + json.dumps({**meta, "runs": mine, **doc.get("summary", {})}), flush=True)


if __name__ == "__main__":
    main()
