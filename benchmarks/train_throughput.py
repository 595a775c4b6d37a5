"""Training throughput on real Baby: epoch seconds, triples/s and full-ranking eval seconds per
model with 1 and 2 workers (2 workers through Ray Train). Reference (MMRec, 2 cores): LightGCN
5.0 s/epoch, 2.8 s/pass; FREEDOM 19 s/epoch, 3.1 s/pass.

Usage: .venv/bin/python benchmarks/train_throughput.py [--models bpr,lightgcn,freedom,blast] [--epochs 3] [--workers 1,2]
Prints `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile

import numpy as np

from blast_ray.runtime import apply_process_env_defaults

apply_process_env_defaults()  # as the `blast` CLI does, before torch allocates (runtime.PROCESS_ENV_DEFAULTS)

from blast_ray.config import TrainConfig, shared_data_dir
from blast_ray.store import ArtifactStore
from blast_ray.etl.readers import read_lattice_split
from blast_ray.train import TrainInputs, fit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="bpr,lightgcn,freedom,blast")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    data = read_lattice_split(shared_data_dir() / "amazon-baby-5core")
    res = {"machine": platform.node(), "cpus": os.cpu_count(), "seed": args.seed, "epochs": args.epochs}
    for w in (int(x) for x in args.workers.split(",")):
        for model in args.models.split(","):
            cfg = TrainConfig(model=model, epochs=args.epochs, seed=args.seed, num_workers=w)
            with tempfile.TemporaryDirectory() as d:
                state = fit(cfg, TrainInputs(data), store=ArtifactStore(d), checkpoint_parts=("baby", "checkpoints", f"{model}-{w}"))
            h = state.history
            res[f"{model}.w{w}.epoch_seconds"] = float(np.median([r["train_seconds"] for r in h]))
            res[f"{model}.w{w}.triples_per_s"] = float(data.n_train / res[f"{model}.w{w}.epoch_seconds"])
            res[f"{model}.w{w}.eval_seconds"] = float(np.median([r["eval_seconds"] for r in h if "eval_seconds" in r]))
            print(json.dumps({k: v for k, v in res.items() if k.startswith(f"{model}.w{w}")}), flush=True)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
