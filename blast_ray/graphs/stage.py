"""The graphs stage: ``run(ctx, out)`` -> per-modality item kNN edges, S_I and S_U (method doc
section 2; files and schemas in ``blast_ray.graphs.artifacts``).

- Item modalities come from the features output: item_text -> "text", item_visual -> "visual".
  When there is none and ``graphs.item_cooc_fallback`` is on, the item kNN is built over item
  co-occurrence vectors (columns of the TRAIN R, cosine) as the explicit modality "cooc" [choice].
- Per modality: binary top-k (``include_self`` per config), D^-1/2 S D^-1/2, then
  S_I = sum_m alpha_m S~^m with alpha_v / alpha_t from config (cooc weight 1); missing modalities
  dropped and the rest renormalized.
- Items without a visual vector (no image, or it failed to load: features' ``load_feature_masks``)
  are left out of the visual kNN entirely: no out-edges and never anyone's neighbour (a zero
  vector would make their neighbours arbitrary). In S_I such an item's row is its text row with
  full weight (the method's "missing modality dropped, weights renormalized", per item;
  ``combine_graphs(row_masks=...)``). Counted in row_counts ``item_knn_<m>_rows_without_vector``.
- User-user: the same construction over user_text; skipped (logged, manifest extra) when absent.
  Users whose user_text vector is all-zero (no profile: e.g. ``profiles.sample_users``) get no
  user-user edges and are nobody's neighbour (row count ``user_graph_rows_without_vector``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from blast_ray.graphs import artifacts
from blast_ray.graphs.artifacts import (  # noqa: F401  (re-exported: the stage's public loaders)
    edges_table,
    has_user_graph,
    load_graph,
    load_item_knn,
    matrix_table,
)
from blast_ray.graphs.knn import combine_graphs, knn_topk, sym_normalize

log = logging.getLogger("blast_ray.graphs")

FEATURE_MODALITY = {"item_text": "text", "item_visual": "visual"}


def _knn(x, cfg):
    if cfg.distributed:
        from blast_ray.graphs.distributed import knn_topk_ray

        return knn_topk_ray(x, cfg.knn_k, cfg.include_self, cfg.block_rows, cfg.num_blocks)
    return knn_topk(x, cfg.knn_k, cfg.include_self, cfg.block_rows)


def knn_rows(x: np.ndarray, rows: np.ndarray | None, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k among the given rows only (None: all rows): (src rows, cols (len(src), k), sims).

    Rows outside ``rows`` (no vector for that modality) get no out-edges and are nobody's
    neighbour; column ids are global.
    """
    if rows is None:
        cols, sims = _knn(x, cfg)
        return np.arange(x.shape[0]), cols, sims
    sub_cols, sims = _knn(x[rows], cfg)
    return rows, rows[sub_cols], sims


def binary_knn(src: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_matrix:
    k = cols.shape[1]
    m = sp.csr_matrix((np.ones(cols.size, np.float32), (np.repeat(src, k), cols.reshape(-1))), shape=(n, n))
    m.sort_indices()
    return m


def run(ctx, out) -> dict:
    cfg = ctx.cfg.graphs
    etl = ctx.require("etl")
    t0 = time.time()
    counts = etl.manifest.get("row_counts", {})
    n_items, n_users = int(counts["items"]), int(counts["users"])
    feats: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    feat_out = ctx.outputs.get("features")
    if feat_out is not None:
        from blast_ray.features.artifacts import load_feature_masks, load_features

        feats = load_features(feat_out)
        masks = load_feature_masks(feat_out)
    else:
        log.warning("no features output in this run")

    row_counts: dict[str, int] = {}
    timings: dict[str, float] = {}
    extra: dict = {"knn_k": cfg.knn_k, "include_self": cfg.include_self}
    item_inputs: dict[str, object] = {}
    item_rows: dict[str, np.ndarray] = {}  # modality -> rows that have a vector (absent: all)
    for name, modality in FEATURE_MODALITY.items():
        if name in feats:
            if feats[name].shape[0] != n_items:
                raise ValueError(f"features.{name} has {feats[name].shape[0]} rows, ETL has {n_items} items")
            item_inputs[modality] = feats[name]
            if name in masks and not masks[name].all():
                item_rows[modality] = masks[name]
    if not item_inputs:
        if not cfg.item_cooc_fallback:
            raise RuntimeError("no item feature (text/visual) and graphs.item_cooc_fallback=false: cannot build S_I")
        from blast_ray.data import load_interactions

        data = load_interactions(etl)
        log.warning("no item features: item kNN over co-occurrence (columns of train R), modality 'cooc'")
        item_inputs["cooc"] = sp.csr_matrix(data.train.T)
    weights = {"visual": cfg.alpha_v, "text": cfg.alpha_t, "cooc": 1.0}

    normalized = {}
    for modality, x in item_inputs.items():
        t1 = time.time()
        if modality in item_rows:
            # kNN among the items that have this modality only, mapped back to global item ids
            rows = np.flatnonzero(item_rows[modality])
            if len(rows) < 2:
                log.warning("only %d item(s) have a %s vector: no %s kNN", len(rows), modality, modality)
                item_rows.pop(modality)
                continue
            rows, cols, sims = knn_rows(x, rows, cfg)
            row_counts[f"item_knn_{modality}_rows_without_vector"] = int(n_items - len(rows))
            log.warning("%d of %d items have no %s vector: no %s edges for them", n_items - len(rows), n_items, modality, modality)
        else:
            rows, cols, sims = knn_rows(x, None, cfg)
        artifacts.write_item_knn(out, modality, cols, sims, rows)
        normalized[modality] = sym_normalize(binary_knn(rows, cols, n_items))
        timings[f"item_knn_{modality}_s"] = round(time.time() - t1, 3)
        row_counts[f"item_knn_{modality}"] = int(cols.size)
    s_i, eff = combine_graphs(normalized, {m: w for m, w in weights.items() if m != "cooc" or "cooc" in normalized},
                              row_masks=item_rows)
    artifacts.write_graph(out, "item", s_i)
    row_counts["item_graph"] = int(s_i.nnz)
    extra["item_modalities"] = sorted(normalized)
    extra["item_weights"] = eff

    if not cfg.user_graph:
        extra["user_graph"] = "disabled (graphs.user_graph=false)"
        log.info("user-user graph disabled by config")
    elif "user_text" not in feats:
        extra["user_graph"] = "skipped: no user_text feature"
        log.warning("no user_text feature: user-user graph skipped")
    else:
        y = feats["user_text"]
        if y.shape[0] != n_users:
            raise ValueError(f"features.user_text has {y.shape[0]} rows, ETL has {n_users} users")
        t1 = time.time()
        # users without a profile have a zero user_text vector (features stage): a zero row's
        # neighbours would be arbitrary (lowest indices), so they get no user-user edges instead
        has = np.linalg.norm(y, axis=1) > 0
        if has.sum() < 2:
            extra["user_graph"] = f"skipped: only {int(has.sum())} user(s) with a non-zero user_text vector"
            log.warning("user-user graph skipped: %s", extra["user_graph"])
        else:
            if not has.all():
                row_counts["user_graph_rows_without_vector"] = int((~has).sum())
                log.warning("%d of %d users have a zero user_text vector (no profile): no user-user edges for them",
                            int((~has).sum()), n_users)
            src, cols, _ = knn_rows(y, None if has.all() else np.flatnonzero(has), cfg)
            s_u = sym_normalize(binary_knn(src, cols, n_users))
            artifacts.write_graph(out, "user", s_u)
            timings["user_graph_s"] = round(time.time() - t1, 3)
            row_counts["user_graph"] = int(s_u.nnz)
            extra["user_graph"] = "built from user_text"
    extra["shape"] = {"items": n_items, "users": n_users}
    timings["total_s"] = round(time.time() - t0, 3)
    return {"row_counts": row_counts, "timings": timings, "extra": extra, "metrics": {}}
