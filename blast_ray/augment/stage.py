"""The augment stage: ``run(ctx, out)`` -> augmented pairs H and false-negative candidates G
(files and schemas in ``blast_ray.augment.artifacts``).

Reads the ETL train degrees (streamed) and plans user row blocks under ``augment.task_memory_gib``
(``augment.num_blocks``); each block (a Ray actor, :mod:`blast_ray.augment.rowblocks`) builds its
rows of G = binarize(R @ K_union) - R from its users' train rows and the item kNN graphs, takes part
in the blocked Sinkhorn and proposes its top q; the driver merges them into the exact top
q = ratio * nnz(R) plan entries among cells with R_ui = 0 (the same H as the single-process
``false_negative_candidates`` + ``sparse_sinkhorn`` + ``top_q_cells``).
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import scipy.sparse as sp

from blast_ray.augment import artifacts
from blast_ray.augment.artifacts import Augmentation, load_augmentation  # noqa: F401  (re-exported)
from blast_ray.augment.rowblocks import (
    BlockPlan,
    RowBlockWorker,
    fixed_task_bytes,
    item_knn_union,
    merge_top_q,
    plan_row_blocks,
    row_cells,
)
from blast_ray.augment.sinkhorn import (
    KernelCoefficients,
    SinkhornResult,
    _warn_if_unconverged,
    combine_columns,
    marginals_of,
    sinkhorn_iterate,
)

log = logging.getLogger(__name__)

# the environment an S3 ArtifactStore is configured from (blast_ray.store.artifact_store)
STORE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def spread_summary(users: np.ndarray, items: np.ndarray, R: sp.csr_matrix, n_buckets: int = 4) -> dict:
    """How H spreads over user-activity and item-popularity quantile buckets (bucket 0 = lowest)."""
    return spread_from_degrees(users, items, np.diff(R.indptr), np.diff(R.tocsc().indptr), n_buckets)


def spread_from_degrees(users: np.ndarray, items: np.ndarray, deg_users: np.ndarray, deg_items: np.ndarray,
                        n_buckets: int = 4) -> dict:
    """:func:`spread_summary` from the train degree vectors (M,) and (N,)."""
    out = {}
    for name, deg, idx in (("users", deg_users, users), ("items", deg_items, items)):
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

    return item_knn_union([item_knn_edges(graphs_out, modality)], k, n_items)[0]


def run(ctx, out) -> dict:
    from blast_ray.etl.artifacts import train_degrees
    from blast_ray.graphs.artifacts import item_knn_file

    cfg = ctx.cfg.augment
    t0 = time.time()
    etl = ctx.require("etl")
    counts = etl.manifest.get("row_counts", {})
    deg_u, deg_i = train_degrees(etl.store, etl.parts, counts.get("users"), counts.get("items"))
    M, N = int(deg_u.size), int(deg_i.size)
    nnz = int(deg_u.sum())
    if not cfg.enabled:
        log.info("augment disabled: writing empty outputs")
        e = np.zeros(0, dtype=np.int64)
        artifacts.write_augmentation(out, e, e, np.zeros(0), sp.csr_matrix((M, N)))
        return {"row_counts": {"augmented_pairs": 0, "false_negatives": 0},
                "timings": {"total_s": round(time.time() - t0, 3)},
                "extra": {"enabled": False, "shape": {"users": M, "items": N}}, "metrics": {}}
    graphs_out = ctx.require("graphs")
    modalities = graphs_out.manifest.get("extra", {}).get("item_modalities", [])
    if not modalities:
        raise RuntimeError(f"graphs output {graphs_out.fingerprint} lists no item modalities")
    for m in modalities:
        if not graphs_out.store.exists(*graphs_out.parts, item_knn_file(m)):
            raise KeyError(f"graphs output {graphs_out.fingerprint} has no item kNN file for modality {m!r}")
    knn_parts = [(*graphs_out.parts, item_knn_file(m)) for m in modalities]
    k_union = cfg.knn_k * len(modalities)
    plan = plan_row_blocks(row_cells(deg_u, k_union, N), cfg.num_blocks, cfg.task_memory_gib,
                           fixed_task_bytes(N, k_union))
    a, b = marginals_of(nnz, M, N, cfg.row_target, cfg.col_target, deg_users=deg_u, deg_items=deg_i)
    q = int(round(cfg.ratio * nnz))
    res, selected, block_stats, t_marks = solve_blocks(
        plan, etl, knn_parts, out, cfg, a, b, q, N, deg_u, deg_i, in_process=(cfg.num_blocks == 1))
    n_g = int(sum(s["false_negatives"] for s in block_stats))
    extra = {
        "enabled": True,
        "modalities": modalities,
        "sinkhorn": {**res.diagnostics(), "num_blocks": plan.num_blocks, "error_history_tail": res.errors[-10:]},
        "blocks": {**plan.summary(), "num_blocks_setting": cfg.num_blocks, "task_memory_gib": cfg.task_memory_gib,
                   "peak_cells_per_block": int(max(s["cells"] for s in block_stats)),
                   "in_process": cfg.num_blocks == 1},
        "q": q,
        "h_in_g": selected["h_in_g"],
        "spread": selected["spread"],
        "timings_detail": {"build_s": round(t_marks[0] - t0, 3), "sinkhorn_s": round(t_marks[1] - t_marks[0], 3),
                           "topq_s": round(t_marks[2] - t_marks[1], 3)},
        "shape": {"users": M, "items": N},
    }
    metrics = {"sinkhorn.iterations": extra["sinkhorn"]["iterations"],
               "sinkhorn.final_error": extra["sinkhorn"]["final_error"]}
    return {"row_counts": {"augmented_pairs": selected["pairs"], "false_negatives": n_g},
            "timings": {"total_s": round(time.time() - t0, 3)}, "extra": extra, "metrics": metrics}


def write_selection(out, parts, q: int, deg_u: np.ndarray, deg_i: np.ndarray) -> dict:
    """Merge the blocks' candidates ``parts`` (an iterable of ``(users, items, log values, in G)``)
    into the global top q, write them as H, and return what the manifest reports: ``pairs``,
    ``h_in_g`` and the activity/popularity ``spread``."""
    users, items, logv, in_g = merge_top_q(parts, q)
    artifacts.write_pairs(out, users, items, np.exp(logv))
    return {"pairs": int(users.size), "h_in_g": int(in_g.sum()), "spread": spread_from_degrees(users, items, deg_u, deg_i)}


def _select_task(refs: list, q: int, out, deg_u: np.ndarray, deg_i: np.ndarray) -> dict:
    """Ray task: :func:`write_selection` over the blocks' top-q refs, merged as they arrive (the
    driver never holds the candidates or H: they grow with the interactions)."""
    import ray

    def arrivals():
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    return write_selection(out, arrivals(), q, deg_u, deg_i)


def solve_blocks(plan: BlockPlan, etl, knn_parts, out, cfg, a: np.ndarray, b: np.ndarray, q: int, N: int,
                 deg_u: np.ndarray, deg_i: np.ndarray, in_process: bool = False):
    """Build, solve and select on the planned row blocks; the blocks write their rows of G, the
    selection (:func:`write_selection`) writes H.

    ``in_process``: the blocks and the selection live in this process (``augment.num_blocks: 1``);
    otherwise one Ray actor per block (0.5 CPU each, fewer when the cluster has fewer CPUs than
    blocks need) and one Ray task that merges their candidates and writes H. Returns
    (SinkhornResult, the selection's counts {pairs, h_in_g, spread}, per-block counts,
    (t_built, t_solved, t_selected)).
    """
    fn_parts = artifacts.false_negatives_parts(out)
    coef = KernelCoefficients.of(cfg.eps)
    if in_process:
        workers = [RowBlockWorker(k, s, e, N, cfg.eps) for k, (s, e) in enumerate(plan.bounds)]
        call = lambda w, name, *args: getattr(w, name)(*args)  # noqa: E731
        get = lambda xs: xs  # noqa: E731
        put = lambda x: x  # noqa: E731
        kill = lambda w: None  # noqa: E731
    else:
        from blast_ray.runtime import ensure_ray

        ray = ensure_ray()
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        per = max(0.01, min(0.5, cpus / (2 * plan.num_blocks)))
        options = {"num_cpus": per}
        if etl.store.is_s3 or out.store.is_s3:
            # the blocks read and write the store themselves: they get the S3 settings the driver has
            # (Ray workers keep the environment of the process that started the cluster)
            env = {k: os.environ[k] for k in STORE_ENV if k in os.environ}
            if env:
                options["runtime_env"] = {"env_vars": env}
        Actor = ray.remote(**options)(RowBlockWorker)
        workers = [Actor.remote(k, s, e, N, cfg.eps) for k, (s, e) in enumerate(plan.bounds)]
        call = lambda w, name, *args: getattr(w, name).remote(*args)  # noqa: E731
        get, put, kill = ray.get, ray.put, ray.kill
    try:
        store_ref = put(etl.store)
        stats = get([call(w, "build", store_ref, etl.parts, knn_parts, cfg.knn_k, a[s:e])
                     for w, (s, e) in zip(workers, plan.bounds)])
        t_built = time.time()

        def step_rows(have_f, g):
            g_ref = put(g)
            outs = get([call(w, "step", have_f, g_ref) for w in workers])
            fmax, col = combine_columns([(o[1], o[2]) for o in outs])
            return float(sum(o[0] for o in outs)), fmax, col

        g, n_iter, err, conv, secs, errors = sinkhorn_iterate(
            step_rows, N, np.log(b), float(a.sum()), coef, None, cfg.tol, cfg.max_iter, True)
        f = np.concatenate(get([call(w, "f_values") for w in workers]))
        res = SinkhornResult(f, g, coef.eps, n_iter, err, conv, secs, errors)
        _warn_if_unconverged(res, cfg.tol)
        t_solved = time.time()
        g_ref = put(g)
        if in_process:
            selected = write_selection(out, (w.top_q(g, q) for w in workers), q, deg_u, deg_i)
        else:
            refs = [w.top_q.remote(g_ref, q) for w in workers]
            select = ray.remote(**options)(_select_task)
            selected = ray.get(select.remote(refs, q, out, deg_u, deg_i))
        t_selected = time.time()
        get([call(w, "write_false_negatives", store_ref, fn_parts) for w in workers])
    finally:
        for w in workers:
            kill(w)
    return res, selected, stats, (t_built, t_solved, t_selected)
