"""Does a co-occurrence user graph help BLAST where the user profiles say nothing? VALIDATION only.

The quality tables (docs/RESULTS.md) found BLAST's user graph from template user profiles lowering
validation on every dataset, and BLAST's tuned choice dropping it. This benchmark asks whether the
user graph fails because of the profiles: it trains each dataset's shipped (tuned) configuration
with the user-user graph built over co-occurrence instead (``graphs.user_graph_source: cooc``: users
who bought the same train items), at ``train.n_layers_uu`` 1 and 2, everything else unchanged, and
reports the validation Recall@20 at the best validation epoch (the config's epochs, early stopping).
No test metric is read: this is evidence for what to put in the search space, not a result.

Machine: whatever runs it (stated in the RESULT); seed: ``train.seed`` = 2024 for every run.
Upstream outputs are reused from the store by fingerprint (``--store``).

Usage: python benchmarks/user_graph_cooc.py [--datasets ml-100k amazon-scientific] [--store DIR]
RESULT keys: ``<dataset>.<variant>.valid.recall@20``, ``<dataset>.<variant>.best_epoch`` (1-based),
``<dataset>.<variant>.seconds``, ``<dataset>.uu_cooc_best_vs_shipped`` (best variant / shipped - 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"ml-100k": "configs/ml-100k.yaml", "amazon-scientific": "configs/amazon-scientific.yaml",
           "amazon-baby": "configs/amazon-baby.yaml", "amazon-sports": "configs/amazon-sports.yaml"}
VARIANTS = {
    "shipped": {},
    "uu_cooc_1": {"graphs.user_graph": True, "graphs.user_graph_source": "cooc", "train.n_layers_uu": 1},
    "uu_cooc_2": {"graphs.user_graph": True, "graphs.user_graph_source": "cooc", "train.n_layers_uu": 2},
}
SEED = 2024


def valid_run(base, values: dict, tag: str) -> tuple[float, int]:
    """(valid Recall@20 at the best validation epoch, that epoch 1-based) of ``base`` + ``values``:
    upstream stages and train through the pipeline (cached by fingerprint); the train manifest's
    validation figure is the only one read."""
    from blast_ray.pipeline import run_pipeline
    from blast_ray.tune.runner import config_with, upstream_stages

    cfg = config_with(base, {**values, "train.seed": SEED, "evaluate.baselines": []})
    cfg.train.progress = False
    res = run_pipeline(cfg, stages=(*upstream_stages(cfg), "train"), run_id=f"uu-cooc-{tag}")
    if not res.ok:
        raise RuntimeError(f"{tag}: {res.error}")
    m = res.manifests["train"]["extra"]["metrics"]
    return float(m["valid.recall@20"]), int(m["best_epoch"]) + 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "amazon-scientific"], choices=sorted(CONFIGS))
    p.add_argument("--store", default=str(ROOT / "blast-data" / "quality"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from blast_ray.config import load_config

    out: dict = {"machine": f"{platform.node()} {platform.machine()}, Python {platform.python_version()}", "seed": SEED}
    for ds in args.datasets:
        base = load_config(ROOT / CONFIGS[ds])
        base.store = args.store
        for name, values in VARIANTS.items():
            t0 = time.time()
            v, epoch = valid_run(base, values, f"{ds}-{name}")
            out[f"{ds}.{name}.valid.recall@20"] = round(v, 5)
            out[f"{ds}.{name}.best_epoch"] = epoch
            out[f"{ds}.{name}.seconds"] = round(time.time() - t0, 1)
            logging.info("%s %s: valid recall@20 %.4f (epoch %d)", ds, name, v, epoch)
        best = max(out[f"{ds}.{n}.valid.recall@20"] for n in VARIANTS if n != "shipped")
        out[f"{ds}.uu_cooc_best_vs_shipped"] = round(best / out[f"{ds}.shipped.valid.recall@20"] - 1, 4)
    print("RESULT " + json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
