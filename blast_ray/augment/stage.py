"""The augment stage: ``run(ctx, out)`` -> augmented pairs H and false-negative candidates G
(files and schemas in ``blast_ray.augment.artifacts``).

Reads the ETL train R and the graphs stage's per-modality item kNN graphs, builds
G = binarize(R @ K_union) - R, solves the sparse (optionally Ray row-blocked) Sinkhorn and keeps
the exact top q = ratio * nnz(R) plan entries among cells with R_ui = 0.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from blast_ray.augment import artifacts
from blast_ray.augment.artifacts import Augmentation, load_augmentation  # noqa: F401  (re-exported)
from blast_ray.augment.distributed import distributed_sinkhorn
from blast_ray.augment.false_negatives import false_negative_candidates
from blast_ray.augment.sinkhorn import marginals
from blast_ray.augment.topq import top_q_cells

log = logging.getLogger(__name__)


def spread_summary(users: np.ndarray, items: np.ndarray, R: sp.csr_matrix, n_buckets: int = 4) -> dict:
    """How H spreads over user-activity and item-popularity quantile buckets (bucket 0 = lowest)."""
    out = {}
    for name, deg, idx in (("users", np.diff(R.indptr), users), ("items", np.diff(R.tocsc().indptr), items)):
        edges = np.quantile(deg, np.linspace(0, 1, n_buckets + 1)[1:-1])
        bucket_of = np.searchsorted(edges, deg, side="right")
        counts = np.bincount(bucket_of[idx], minlength=n_buckets)[:n_buckets]
        share = counts / max(1, len(idx))
        out[name] = {
            "degree_edges": [float(e) for e in edges],
            "pairs": [int(c) for c in counts],
            "share": [round(float(s), 6) for s in share],
            "population": [int(c) for c in np.bincount(bucket_of, minlength=n_buckets)[:n_buckets]],
        }
    return out


def _item_knn(graphs_out, modality: str, k: int, n_items: int) -> sp.csr_matrix:
    """The graphs stage's raw kNN of one modality, cut to the top ``k`` by sim per item (augment.knn_k).

    Ties keep the stored order (stable sort). A graph built with fewer than k neighbours is used as is.
    """
    from blast_ray.graphs.artifacts import item_knn_edges

    t = item_knn_edges(graphs_out, modality)  # KeyError naming the modalities the output has
    t = t.sort_values(["src", "sim"], ascending=[True, False], kind="stable")
    t = t[t.groupby("src").cumcount() < k]
    m = sp.csr_matrix((np.ones(len(t)), (t["src"].to_numpy(), t["dst"].to_numpy())), shape=(n_items, n_items))
    m.data[:] = 1.0
    return m


def run(ctx, out) -> dict:
    from blast_ray.etl.artifacts import load_interactions

    cfg = ctx.cfg.augment
    t0 = time.time()
    data = load_interactions(ctx.require("etl"))
    R = sp.csr_matrix(data.train, dtype=np.float64)
    if not cfg.enabled:
        log.info("augment disabled: writing empty outputs")
        G = sp.csr_matrix(R.shape)
        users = items = np.zeros(0, dtype=np.int64)
        values = np.zeros(0)
        extra = {"enabled": False}
    else:
        graphs_out = ctx.require("graphs")
        modalities = graphs_out.manifest.get("extra", {}).get("item_modalities", [])
        if not modalities:
            raise RuntimeError(f"graphs output {graphs_out.fingerprint} lists no item modalities")
        G = false_negative_candidates(R, [_item_knn(graphs_out, m, cfg.knn_k, R.shape[1]) for m in modalities])
        t_g = time.time()
        a, b = marginals(R, cfg.row_target, cfg.col_target)
        res = distributed_sinkhorn(R, G, eps=cfg.eps, a=a, b=b, tol=cfg.tol, max_iter=cfg.max_iter,
                                   num_blocks=cfg.num_blocks, log=True)
        t_s = time.time()
        q = int(round(cfg.ratio * R.nnz))
        users, items, logv = top_q_cells(res.f, res.g, cfg.eps, R, G, q)
        values = np.exp(logv)
        t_q = time.time()
        extra = {
            "enabled": True,
            "modalities": modalities,
            "sinkhorn": {**res.diagnostics(), "num_blocks": cfg.num_blocks, "error_history_tail": res.errors[-10:]},
            "q": q,
            "h_in_g": int((G[users, items].A1 != 0).sum()) if users.size else 0,
            "spread": spread_summary(users, items, R),
        }
        extra["timings_detail"] = {"false_negatives_s": round(t_g - t0, 3), "sinkhorn_s": round(t_s - t_g, 3),
                                   "topq_s": round(t_q - t_s, 3)}
    artifacts.write_augmentation(out, users, items, values, G)
    metrics = {}
    if extra.get("enabled"):
        metrics = {"sinkhorn.iterations": extra["sinkhorn"]["iterations"],
                   "sinkhorn.final_error": extra["sinkhorn"]["final_error"]}
    extra["shape"] = {"users": int(R.shape[0]), "items": int(R.shape[1])}
    return {"row_counts": {"augmented_pairs": int(users.size), "false_negatives": int(G.nnz)},
            "timings": {"total_s": round(time.time() - t0, 3)}, "extra": extra, "metrics": metrics}
