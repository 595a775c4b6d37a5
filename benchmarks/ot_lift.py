"""OT augmentation lift per backbone on real Amazon Scientific (item text features).

For each model in {bpr, lightgcn, freedom, blast} and each variant {base, ot (H added),
ot+restrict (H added, negatives exclude R + G)}: test Recall@20 / NDCG@20 at the best validation
epoch, over seeds; prints a mean/std table and ends with ``RESULT {json}``.

Usage: python benchmarks/ot_lift.py [--epochs 30] [--seeds 0 1 2] [--models bpr lightgcn freedom blast]
Scientific here: the RecBole leave-one-out split (train sequence items / valid / test target).
Scientific has no user profiles here (no profiles stage in this benchmark), so blast's user side is
built from what exists: user_text = the L2-normalised mean of the item-text vectors of the user's
TRAIN items, and S_U = its k=10 cosine kNN graph (normalised like S_I). Without them blast reduces
exactly to freedom (same item branch), which an earlier run of this benchmark showed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from blast_ray.augment import false_negative_candidates, sparse_sinkhorn, top_q_cells
from blast_ray.config import AugmentConfig, TrainConfig
from blast_ray.data.interactions import InteractionData
from blast_ray.graphs.knn import knn_graph, sym_normalize
from blast_ray.train import EvalPlan, TrainInputs, final_outputs, fit

DATA = Path(os.environ.get("BLAST_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def load_scientific():
    d = DATA / "amazon-scientific-2018"
    rows = []
    for split, fname in (("train", "train"), ("valid", "valid"), ("test", "test")):
        with open(d / f"Scientific.{fname}.inter") as fh:
            next(fh)
            for line in fh:
                u, hist, tgt = line.rstrip("\n").split("\t")
                if split == "train":
                    rows += [(int(u), int(i), "train") for i in hist.split() + [tgt]]
                else:
                    rows.append((int(u), int(tgt), split))
    df = pd.DataFrame(rows, columns=["user_idx", "item_idx", "split"]).drop_duplicates(["user_idx", "item_idx"])
    feats = np.fromfile(d / "Scientific.feat1CLS", dtype=np.float32).reshape(-1, 512)
    data = InteractionData.from_frame(df, n_items=feats.shape[0])
    return data, feats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=["bpr", "lightgcn", "freedom", "blast"])
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--eps", type=float, default=0.1)
    args = ap.parse_args()
    data, feats = load_scientific()
    K = knn_graph(feats, 10)
    item_graph = sym_normalize(K)
    R = sp.csr_matrix(data.train, dtype=np.float64)
    G = false_negative_candidates(R, [K])
    acfg = AugmentConfig(eps=args.eps, ratio=args.ratio)
    res = sparse_sinkhorn(R, G, eps=acfg.eps, tol=acfg.tol, max_iter=acfg.max_iter)
    hu, hi, _ = top_q_cells(res.f, res.g, acfg.eps, R, G, int(round(acfg.ratio * R.nnz)))
    neg_ex = sp.csr_matrix(R + G)
    # blast's user side from train interactions only (never valid/test items)
    user_feat = np.asarray(sp.csr_matrix(data.train, dtype=np.float32) @ feats, dtype=np.float32)
    user_feat /= np.maximum(np.linalg.norm(user_feat, axis=1, keepdims=True), 1e-12)
    user_graph = sym_normalize(knn_graph(user_feat, 10))
    rows, out = [], {"machine": f"{platform.node()} {os.cpu_count()} cpus", "epochs": args.epochs,
                     "seeds": args.seeds, "sinkhorn_iters": res.n_iter, "H": int(len(hu)), "G": int(G.nnz)}
    for model in args.models:
        for variant in ("base", "ot", "ot+restrict"):
            for seed in args.seeds:
                cfg = TrainConfig(model=model, epochs=args.epochs, seed=seed)
                inputs = TrainInputs(data, features={"item_text": feats}, item_graph=item_graph)
                if model == "blast":
                    inputs.features["user_text"], inputs.user_graph = user_feat, user_graph
                if variant != "base":
                    inputs.extra_users, inputs.extra_items = hu, hi
                if variant == "ot+restrict":
                    inputs.neg_exclude = neg_ex
                t = time.time()
                plan = EvalPlan(ks=(20,), batch_users=4096)
                state = fit(cfg, inputs, plan)
                _, _, _, _, test = final_outputs(cfg, inputs, state, plan)  # test at the best-validation weights
                rows.append({"model": model, "variant": variant, "seed": seed, "recall@20": test["recall@20"],
                             "ndcg@20": test["ndcg@20"], "seconds": time.time() - t})
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    table = df.groupby(["model", "variant"])[["recall@20", "ndcg@20"]].agg(["mean", "std"])
    print(table.to_string())
    for (m, v), r in table.iterrows():
        out[f"{m}.{v}.recall@20_mean"] = float(r[("recall@20", "mean")])
        out[f"{m}.{v}.recall@20_std"] = float(r[("recall@20", "std")]) if len(args.seeds) > 1 else 0.0
        out[f"{m}.{v}.ndcg@20_mean"] = float(r[("ndcg@20", "mean")])
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
