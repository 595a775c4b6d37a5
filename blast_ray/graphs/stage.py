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
- A feature whose rows are (near-)identical (``spread.row_spread``: >= ``graphs.identical_feature_share``
  (default 0.9) of its non-zero rows at cosine >= 1 - 1e-4 of one row; e.g. template profiles of
  items without text) would give every row the same neighbours by the tie rule: it is not used.
  Items: the remaining modalities, else the co-occurrence kNN; users: no user graph. The reason is
  logged and written to manifest ``extra["fallbacks"][<feature>]``.
- Where the vectors are read: with ``graphs.distributed`` (default) one Ray task per feature reads
  it from the features shards, keeps the searchable rows, runs the degenerate check and builds
  the index (``dense_knn`` -> ``distributed.knn_ann_ray_loaded``), query tasks search it, and
  assembly tasks (:class:`Assembler`) turn their (N, k) neighbours into the edge files and the
  normalized graphs and write S_I / S_U; this process gets back only the :class:`FeatureRows` and
  counts, never the N x d vectors, the neighbours or a graph (its memory does not grow with the
  number of users; the item co-occurrence fallback and ``user_graph_source: cooc`` still run here).
- User-user: the same construction over user_text; skipped (logged, manifest extra) when absent.
  With ``graphs.user_graph_source: cooc`` [choice] it is built over the users' co-occurrence rows
  instead (rows of the TRAIN R, cosine: users who bought the same items), the sparse exact path
  of the item co-occurrence kNN, for data whose user profiles carry nothing (template profiles).
  Users whose user_text vector is all-zero (no profile: e.g. ``profiles.sample_users``) get no
  user-user edges and are nobody's neighbour (row count ``user_graph_rows_without_vector``).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

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
from blast_ray.graphs.ann import AnnParams, knn_ann
from blast_ray.graphs.knn import combine_graphs, knn_topk, sym_normalize
from blast_ray.graphs.spread import row_spread

log = logging.getLogger("blast_ray.graphs")

FEATURE_MODALITY = {"item_text": "text", "item_visual": "visual"}


def ann_params(cfg) -> AnnParams:
    """The FAISS settings of the graphs config section."""
    return AnnParams(index=cfg.index, exact_max_rows=cfg.exact_max_rows, hnsw_m=cfg.hnsw_m,
                     ef_construction=cfg.ef_construction, ef_search=cfg.ef_search,
                     ivf_nlist=cfg.ivf_nlist, ivf_nprobe=cfg.ivf_nprobe)


def cooc_knn(x: sp.spmatrix, cfg) -> tuple[np.ndarray, np.ndarray, dict]:
    """(cols, sims, info) of the sparse co-occurrence rows (items' columns of train R): the exact
    blocked path (FAISS takes dense rows only: those go through :func:`dense_knn`), sharded over
    Ray tasks when ``graphs.distributed``."""
    if cfg.distributed:
        from blast_ray.graphs.distributed import knn_topk_ray

        cols, sims = knn_topk_ray(x, cfg.knn_k, cfg.include_self, cfg.block_rows, cfg.num_blocks)
    else:
        cols, sims = knn_topk(x, cfg.knn_k, cfg.include_self, cfg.block_rows)
    return cols, sims, {"index": "exact-sparse", "rows": int(x.shape[0])}


def binary_knn(src: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_matrix:
    k = cols.shape[1]
    m = sp.csr_matrix((np.ones(cols.size, np.float32), (np.repeat(src, k), cols.reshape(-1))), shape=(n, n))
    m.sort_indices()
    return m


def degenerate_reason(x: np.ndarray, rows: np.ndarray | None, cfg) -> str | None:
    """Why the feature ``x`` cannot rank neighbours (its rows are (near-)identical), or None.

    ``rows``: the rows that hold a vector (None: all). Threshold: ``graphs.identical_feature_share``
    (share of non-zero rows identical to the most central one).
    """
    spread = row_spread(x, rows)
    if spread.degenerate(cfg.identical_feature_share):
        return spread.describe()
    return None


@dataclass(frozen=True)
class FeatureRows:
    """Which rows of one dense feature its kNN searches, or why it builds none (small: what the
    process that loaded the feature tells the driver)."""

    n: int  # rows of the feature (items or users)
    rows: np.ndarray | None  # the rows that hold a vector, searched; None: all of them
    n_with: int  # how many rows hold one
    degenerate: str | None  # the rows are (near-)identical: why the feature cannot rank neighbours

    @property
    def usable(self) -> bool:
        return self.degenerate is None and self.n_with >= 2


def feature_rows(x: np.ndarray, seen: np.ndarray, drop_zero_rows: bool, cfg) -> FeatureRows:
    """The searchable rows of ``x``: those with a vector (``seen``) and, with ``drop_zero_rows``
    (users: no profile), a non-zero one; the degenerate check over them (>= 2 rows)."""
    has = np.asarray(seen, dtype=bool).copy()
    if drop_zero_rows:
        has &= np.linalg.norm(x, axis=1) > 0
    n_with = int(has.sum())
    rows = None if has.all() else np.flatnonzero(has)
    why = degenerate_reason(x, rows, cfg) if n_with >= 2 else None
    return FeatureRows(len(x), rows, n_with, why)


def load_feature_rows(feat_out, name: str, drop_zero_rows: bool, cfg) -> tuple[np.ndarray | None, FeatureRows]:
    """In the process that searches: feature ``name`` read from the features output, only its
    searchable rows (a subset copy, the full array freed), with its :class:`FeatureRows`; x is None
    when it is not usable."""
    from blast_ray.features.artifacts import load_vectors

    x, seen = load_vectors(feat_out, name)
    about = feature_rows(x, seen, drop_zero_rows, cfg)
    if not about.usable:
        return None, about
    return (x if about.rows is None else x[about.rows]), about


def dense_knn(feat_out, name: str, drop_zero_rows: bool, cfg):
    """Top-k of feature ``name`` among its searchable rows: ``(about, parts, info)`` (``parts``
    None when ``about`` says it is not usable).

    ``parts``: the search result as row ranges of ``(cols, sims)`` in row order, positions among
    ``about.rows`` (:func:`knn_edges` maps them to global ids). With ``graphs.distributed`` a Ray
    task reads the feature and builds the index (``knn_ann_ray_loaded``) and ``parts`` are the
    query tasks' object refs: this process holds neither the vectors nor the (N, k) neighbours,
    whatever the number of users (the assembly tasks read them); otherwise this process searches
    and ``parts`` holds one local ``(cols, sims)``."""
    load = functools.partial(load_feature_rows, feat_out, name, drop_zero_rows, cfg)
    kwargs = dict(k=cfg.knn_k, include_self=cfg.include_self, params=ann_params(cfg),
                  task_memory_gib=cfg.task_memory_gib, recall_sample=cfg.recall_sample,
                  recall_floor=cfg.recall_floor)
    if cfg.distributed:
        from blast_ray.graphs.distributed import knn_ann_ray_loaded

        about, refs, _, info = knn_ann_ray_loaded(load, num_blocks=cfg.num_blocks, num_cpus=0.5,
                                                  build_cpus=cfg.index_build_cpus, fetch=False, **kwargs)
        return about, refs, info
    x, about = load()
    if x is None:
        return about, None, None
    cols, sims, info = knn_ann(x, **kwargs)
    return about, [(cols, sims)], info


# ---- assembly: the (N, k) neighbours -> files and normalized graphs. Pure functions of their
# arguments, run in this process or (graphs.distributed) as Ray tasks, so the driver never holds
# the neighbours or a graph.
def knn_edges(parts, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(src, cols, sims)`` in global ids from the row-range results ``parts`` of a search among
    ``rows`` (None: all rows)."""
    cols = np.concatenate([p[0] for p in parts])
    sims = np.concatenate([p[1] for p in parts])
    if rows is None:
        return np.arange(len(cols)), cols, sims
    return rows, rows[cols], sims


def item_modality_graph(out, modality: str, n_items: int, rows: np.ndarray | None, parts):
    """Writes one item modality's raw edges; returns its normalized binary kNN and its edge count."""
    src, cols, sims = knn_edges(parts, rows)
    artifacts.write_item_knn(out, modality, cols, sims, src)
    return sym_normalize(binary_knn(src, cols, n_items)), int(cols.size)


def user_graph(out, n_users: int, rows: np.ndarray | None, parts) -> int:
    """Writes S_U (the normalized binary user kNN); returns its nnz."""
    src, cols, _ = knn_edges(parts, rows)
    s_u = sym_normalize(binary_knn(src, cols, n_users))
    artifacts.write_graph(out, "user", s_u)
    return int(s_u.nnz)


def item_graph(out, normalized: dict, weights: dict[str, float], row_masks: dict[str, np.ndarray]):
    """Writes S_I = the weighted sum of the modality graphs; returns (nnz, effective weights)."""
    s_i, eff = combine_graphs(normalized, weights, row_masks=row_masks, log_fn=lambda _msg: None)
    artifacts.write_graph(out, "item", s_i)
    return int(s_i.nnz), eff


def _resolved(ray, value):
    """``value`` with the object refs in it (top level, list or dict values) read."""
    if isinstance(value, ray.ObjectRef):
        return ray.get(value)
    if isinstance(value, list):
        return [_resolved(ray, v) for v in value]
    if isinstance(value, dict):
        return {k: _resolved(ray, v) for k, v in value.items()}
    return value


def _assemble_task(fn, *args):
    import ray

    return fn(*(_resolved(ray, a) for a in args))


class Assembler:
    """Runs the assembly functions here, or (``graphs.distributed``) as Ray tasks whose results stay
    in the object store until :meth:`get` reads the small ones."""

    def __init__(self, distributed: bool):
        self.ray = None
        if distributed:
            from blast_ray.runtime import ensure_ray

            self.ray = ensure_ray()
            self._task = self.ray.remote(num_cpus=0.5)(_assemble_task)

    def call(self, fn, *args, num_returns: int = 1):
        if self.ray is None:
            return fn(*args)
        return self._task.options(num_returns=num_returns).remote(fn, *args)

    def get(self, value):
        if self.ray is None:
            return value
        from ray.exceptions import RayTaskError

        try:
            return self.ray.get(value)
        except RayTaskError as e:  # the search or assembly task's own error, one line
            cause = e
            while isinstance(cause, RayTaskError) and isinstance(cause.cause, Exception):
                cause = cause.cause
            raise cause from None


def run(ctx, out) -> dict:
    cfg = ctx.cfg.graphs
    etl = ctx.require("etl")
    t0 = time.time()
    counts = etl.manifest.get("row_counts", {})
    n_items, n_users = int(counts["items"]), int(counts["users"])
    feat_out = ctx.outputs.get("features")
    names: list[str] = []
    if feat_out is not None:
        from blast_ray.features.artifacts import feature_names

        names = feature_names(feat_out)
    else:
        log.warning("no features output in this run")

    @functools.cache
    def train() -> sp.csr_matrix:
        """The TRAIN R (users x items) for the co-occurrence kNNs, read once however many use it."""
        from blast_ray.etl.artifacts import load_interactions

        return sp.csr_matrix(load_interactions(etl).train)

    row_counts: dict[str, int] = {}
    timings: dict[str, float] = {}
    extra: dict = {"knn_k": cfg.knn_k, "include_self": cfg.include_self}
    fallbacks: dict[str, str] = {}  # feature -> why it was not used and what replaced it
    degenerate_items: dict[str, str] = {}
    item_rows: dict[str, np.ndarray] = {}  # modality -> rows that have a vector (absent: all)
    normalized = {}  # modality -> its normalized graph (an object ref when graphs.distributed)
    assemble = Assembler(cfg.distributed)
    for name, modality in FEATURE_MODALITY.items():
        if name not in names:
            continue
        t1 = time.time()
        # the vectors are read (and the index built) where the search runs: not in this process
        # when graphs.distributed (the default)
        about, parts, search = dense_knn(feat_out, name, False, cfg)
        if about.n != n_items:
            raise ValueError(f"features.{name} has {about.n} rows, ETL has {n_items} items")
        if about.degenerate is not None:
            # every item would get the same neighbours by the tie rule: the feature says nothing
            degenerate_items[name] = about.degenerate
            continue
        if about.n_with < 2:
            log.warning("only %d item(s) have a %s vector: no %s kNN", about.n_with, modality, modality)
            continue
        if about.rows is not None:
            # kNN among the items that have this modality only, mapped back to global item ids
            item_rows[modality] = np.zeros(n_items, dtype=bool)
            item_rows[modality][about.rows] = True
            row_counts[f"item_knn_{modality}_rows_without_vector"] = int(n_items - about.n_with)
            log.warning("%d of %d items have no %s vector: no %s edges for them", n_items - about.n_with, n_items,
                        modality, modality)
        extra.setdefault("knn_search", {})[f"item_{modality}"] = search
        normalized[modality], n_edges = assemble.call(item_modality_graph, out, modality, n_items, about.rows, parts,
                                                      num_returns=2)
        row_counts[f"item_knn_{modality}"] = assemble.get(n_edges)
        timings[f"item_knn_{modality}_s"] = round(time.time() - t1, 3)
    for name, why in degenerate_items.items():
        then = f"dropped, S_I from {', '.join(sorted(normalized))}" if normalized else "co-occurrence"
        fallbacks[name] = f"{why} -> {then}"
        log.warning("features.%s is uninformative for the item kNN: %s", name, fallbacks[name])
    if not normalized:
        if not cfg.item_cooc_fallback:
            what = "every item feature has (near-)identical rows" if degenerate_items else "no item feature (text/visual)"
            raise RuntimeError(f"{what} and graphs.item_cooc_fallback=false: cannot build S_I; "
                               "set graphs.item_cooc_fallback=true or give the items distinct text/visual features")
        if not degenerate_items:
            log.warning("no item features: item kNN over co-occurrence (columns of train R), modality 'cooc'")
        t1 = time.time()
        cols, sims, search = cooc_knn(sp.csr_matrix(train().T), cfg)
        extra.setdefault("knn_search", {})["item_cooc"] = search
        normalized["cooc"], n_edges = item_modality_graph(out, "cooc", n_items, None, [(cols, sims)])
        del cols, sims
        timings["item_knn_cooc_s"] = round(time.time() - t1, 3)
        row_counts["item_knn_cooc"] = n_edges
    weights = {m: w for m, w in {"visual": cfg.alpha_v, "text": cfg.alpha_t, "cooc": 1.0}.items()
               if m != "cooc" or "cooc" in normalized}
    dropped = [m for m in weights if m not in normalized]
    if dropped:
        log.info("modalities %s absent: dropped, remaining weights renormalized", dropped)
    s_i_nnz, eff = assemble.get(assemble.call(item_graph, out, normalized, weights, item_rows))
    row_counts["item_graph"] = s_i_nnz
    extra["item_modalities"] = sorted(normalized)
    normalized.clear()  # the modality graphs (here or in the object store) are written into S_I
    extra["item_weights"] = eff

    if not cfg.user_graph:
        extra["user_graph"] = "disabled (graphs.user_graph=false)"
        log.info("user-user graph disabled by config")
    elif cfg.user_graph_source == "cooc":
        t1 = time.time()
        cols, sims, search = cooc_knn(train(), cfg)
        extra.setdefault("knn_search", {})["user_cooc"] = search
        row_counts["user_graph"] = user_graph(out, n_users, None, [(cols, sims)])
        del cols, sims
        timings["user_graph_s"] = round(time.time() - t1, 3)
        extra["user_graph"] = "built from co-occurrence (rows of train R; graphs.user_graph_source=cooc)"
    elif "user_text" not in names:
        extra["user_graph"] = "skipped: no user_text feature"
        log.warning("no user_text feature: user-user graph skipped")
    else:
        t1 = time.time()
        # users without a profile have a zero user_text vector (features stage): a zero row's
        # neighbours would be arbitrary (lowest indices), so they get no user-user edges instead
        about, parts, search = dense_knn(feat_out, "user_text", True, cfg)
        if about.n != n_users:
            raise ValueError(f"features.user_text has {about.n} rows, ETL has {n_users} users")
        if about.n_with < 2:
            extra["user_graph"] = f"skipped: only {about.n_with} user(s) with a non-zero user_text vector"
            log.warning("user-user graph skipped: %s", extra["user_graph"])
        elif about.degenerate is not None:
            # the same neighbours for every user by the tie rule; no co-occurrence user graph exists
            fallbacks["user_text"] = f"{about.degenerate} -> no user graph"
            extra["user_graph"] = f"skipped: user_text {about.degenerate}"
            log.warning("features.user_text is uninformative for the user kNN: %s", fallbacks["user_text"])
        else:
            if about.rows is not None:
                row_counts["user_graph_rows_without_vector"] = int(n_users - about.n_with)
                log.warning("%d of %d users have a zero user_text vector (no profile): no user-user edges for them",
                            n_users - about.n_with, n_users)
            extra.setdefault("knn_search", {})["user_text"] = search
            row_counts["user_graph"] = assemble.get(assemble.call(user_graph, out, n_users, about.rows, parts))
            timings["user_graph_s"] = round(time.time() - t1, 3)
            extra["user_graph"] = "built from user_text"
    if fallbacks:
        extra["fallbacks"] = fallbacks
    extra["shape"] = {"items": n_items, "users": n_users}
    timings["total_s"] = round(time.time() - t0, 3)
    return {"row_counts": row_counts, "timings": timings, "extra": extra, "metrics": {}}
