"""Cosine top-k on FAISS: exact flat search up to a size threshold, HNSW or IVF above it.

Pure functions over numpy arrays (no I/O, no Ray); ``blast_ray.graphs.distributed`` shards the
queries over Ray tasks. ``faiss`` (``faiss-cpu`` on PyPI; a GPU index when ``faiss`` sees a GPU)
is imported lazily, so the rest of the graphs package works without it.

Objective, for rows ``x`` (N, d) and their L2-normalised copies ``xn`` (float32):
``cols[i] = argtop_k_j <xn_i, xn_j>`` (self excluded unless ``include_self``). The exact index is
``IndexFlatIP``; the approximate ones are ``IndexHNSWFlat`` (graph, no training) and
``IndexIVFFlat`` (k-means cells, trained on a sample) with the inner-product metric.

Tie rule (the same as ``knn.topk_from_sims``): candidates are ranked by similarity rounded to
``SIM_DECIMALS_F32`` decimals (float32 dot products differ in the last bits depending on the
blocking), equal similarities by increasing column. FAISS returns ``k + TIE_SLACK`` candidates and
the rule is applied to them.

Memory: the index holds ``N * d * 4`` bytes (HNSW adds ``~ 2 * M * 4`` bytes per row); a query
block of ``b`` rows needs ``b * (d * 4 + (k + TIE_SLACK) * 12)`` bytes more. ``plan_blocks`` turns a
per-task budget into a block size and fails with one line naming the setting when the index alone
does not fit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

TIE_SLACK = 8
SIM_DECIMALS_F32 = 5  # float32 inner products of unit vectors agree to ~1e-7; 1e-5 makes equals tie
INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")


class AnnError(ValueError):
    """A kNN setting cannot work (budget, index, recall floor); the message names the setting."""


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a core dependency
        raise AnnError("graphs: faiss is not installed; `pip install faiss-cpu` (or faiss-gpu)") from e
    return faiss


def normalize_f32(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Rows scaled to unit L2 norm as C-contiguous float32; all-zero rows stay zero.
    ``inplace``: scale ``x`` itself when it is already C-contiguous float32 (a caller that owns
    the array saves one copy of it)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise AnnError(f"expected a 2-D array (rows x dim), got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise AnnError(f"{bad} rows contain NaN/inf; clean the features before building a kNN graph")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    if inplace and x.flags.writeable:
        x /= norms
        return x
    return np.ascontiguousarray(x / norms, dtype=np.float32)


@dataclass(frozen=True)
class AnnParams:
    """How the index is chosen and tuned.

    ``index``: ``auto`` (flat up to ``exact_max_rows`` rows, else ``hnsw``), ``flat``, ``hnsw`` or
    ``ivf``. ``hnsw_m`` / ``ef_construction`` / ``ef_search``: HNSW graph degree and beam widths.
    ``ivf_nlist`` (0: ``4 * sqrt(N)``) / ``ivf_nprobe``: IVF cells and cells visited per query.
    """

    index: str = "auto"
    exact_max_rows: int = 200_000
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    ivf_nlist: int = 0
    ivf_nprobe: int = 32
    use_gpu: bool = True  # when faiss sees a GPU (faiss-gpu build); the CPU build ignores it

    def __post_init__(self) -> None:
        if self.index not in INDEX_KINDS:
            raise AnnError(f"graphs.index: {self.index!r} is not one of {', '.join(INDEX_KINDS)}")
        for name in ("exact_max_rows", "hnsw_m", "ef_construction", "ef_search", "ivf_nprobe"):
            if getattr(self, name) < 1:
                raise AnnError(f"graphs.{name} must be >= 1, got {getattr(self, name)}")

    def kind_for(self, n: int) -> str:
        if self.index != "auto":
            return self.index
        return "flat" if n <= self.exact_max_rows else "hnsw"


def build_index(xn: np.ndarray, params: AnnParams, seed: int = 0):
    """A FAISS inner-product index over the normalised rows ``xn`` (N, d) float32."""
    faiss = _faiss()
    n, d = xn.shape
    kind = params.kind_for(n)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
    else:
        nlist = params.ivf_nlist or max(1, int(4 * math.sqrt(n)))
        if nlist > n:
            raise AnnError(f"graphs.ivf_nlist={nlist} exceeds the {n} rows; lower it or use graphs.index=flat")
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = xn[rng.choice(n, size=min(n, max(nlist * 40, 10_000)), replace=False)]
        index.train(train)
        index.nprobe = min(params.ivf_nprobe, nlist)
    try:
        index.add(xn)
    except (RuntimeError, MemoryError) as e:
        raise AnnError(f"graphs: the {kind} index over {n} x {d} could not be built ({e}); "
                       f"lower graphs.exact_max_rows or choose graphs.index=ivf") from None
    if params.use_gpu and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)  # pragma: no cover - no GPU here
    return index


def index_bytes(n: int, d: int, params: AnnParams) -> int:
    """Approximate resident size of the index over n rows of dimension d."""
    base = n * d * 4
    if params.kind_for(n) == "hnsw":
        base += n * params.hnsw_m * 2 * 4
    return base


def plan_blocks(n: int, d: int, k: int, params: AnnParams, task_memory_gib: float) -> int:
    """Query rows per block so that the index plus one block fit ``task_memory_gib``.

    Raises AnnError naming ``graphs.task_memory_gib`` when the index alone does not fit.
    """
    budget = task_memory_gib * 2**30
    fixed = index_bytes(n, d, params) * 1.2  # headroom for FAISS's own buffers
    per_row = d * 4 + (k + TIE_SLACK) * 12 + 64
    if budget - fixed < per_row * 256:
        need = (fixed + per_row * 256) / 2**30
        raise AnnError(f"graphs.task_memory_gib={task_memory_gib} cannot hold the {params.kind_for(n)} index over "
                       f"{n} x {d} ({fixed / 2**30:.2f} GiB) plus one query block; raise it to >= {need:.2f}")
    return int(max(256, min(n, (budget - fixed) // per_row)))


def apply_tie_rule(sims: np.ndarray, cols: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Order each row's candidates by (rounded similarity desc, column asc) and keep k.

    FAISS marks missing candidates with column -1: they sort last.
    """
    s = np.round(sims.astype(np.float64), SIM_DECIMALS_F32)
    s[cols < 0] = -np.inf
    order = np.lexsort((np.where(cols < 0, np.iinfo(np.int64).max, cols), -s), axis=1)
    cols = np.take_along_axis(cols, order, axis=1)[:, :k]
    s = np.take_along_axis(s, order, axis=1)[:, :k]
    if (cols < 0).any():
        raise AnnError(f"graphs: the index returned fewer than {k} neighbours for {int((cols < 0).any(axis=1).sum())} "
                       "rows; raise graphs.ef_search (hnsw) or graphs.ivf_nprobe (ivf)")
    return cols.astype(np.int64), s


def search(index, xn: np.ndarray, start: int, stop: int, k: int, include_self: bool,
           block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of rows ``xn[start:stop]`` against the index, in blocks of ``block_rows`` rows."""
    n = index.ntotal
    kk = min(n, k + TIE_SLACK + (0 if include_self else 1))
    cols = np.empty((stop - start, k), dtype=np.int64)
    sims = np.empty((stop - start, k), dtype=np.float64)
    for s in range(start, stop, block_rows):
        e = min(stop, s + block_rows)
        d, i = index.search(xn[s:e], kk)
        i = i.astype(np.int64)
        if not include_self:
            own = i == np.arange(s, e)[:, None]
            d = np.where(own, -np.inf, d)
            i = np.where(own, -1, i)
        cols[s - start: e - start], sims[s - start: e - start] = apply_tie_rule(d, i, k)
    return cols, sims


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact top-k columns that the approximate top-k found."""
    hits = sum(len(np.intersect1d(a, b, assume_unique=False)) for a, b in zip(approx, exact))
    return hits / max(1, exact.size)


def sampled_recall(index, xn: np.ndarray, k: int, include_self: bool, sample: int = 1000,
                   seed: int = 0) -> float:
    """recall@k of ``index`` against exact flat search on ``sample`` random query rows.

    The exact side uses the same tie rule, so an exact index scores 1.0.
    """
    faiss = _faiss()
    n, d = xn.shape
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    q = xn[rows]
    kk = min(n, k + TIE_SLACK + (0 if include_self else 1))
    got = []
    # the exact side by faiss.knn (brute force over xn in place: no second copy of the rows, which
    # an IndexFlatIP would hold; the same results as one)
    for search_with in (index.search, lambda qq, kq: faiss.knn(qq, xn, kq, metric=faiss.METRIC_INNER_PRODUCT)):
        dist, ii = search_with(q, kk)
        ii = ii.astype(np.int64)
        if not include_self:
            own = ii == rows[:, None]
            dist, ii = np.where(own, -np.inf, dist), np.where(own, -1, ii)
        got.append(apply_tie_rule(dist, ii, k)[0])
    return recall_at_k(got[0], got[1])


@dataclass
class PreparedSearch:
    """A built index over the normalised rows, the query block size and what the manifest reports."""

    xn: np.ndarray
    k: int
    block_rows: int
    index: object
    info: dict


def prepare_search(x: np.ndarray, k: int, include_self: bool = True, params: AnnParams | None = None,
                   task_memory_gib: float = 2.0, recall_sample: int = 1000, recall_floor: float = 0.0,
                   seed: int = 0, inplace: bool = False) -> PreparedSearch:
    """Normalise ``x`` (in place when ``inplace``: the caller owns it), size the query blocks from
    the budget, build the index and, for an approximate index, measure its recall@k on
    ``recall_sample`` rows (AnnError below ``recall_floor``). Shared by the one-process and the
    Ray-sharded search."""
    from blast_ray.graphs.knn import effective_k

    params = params or AnnParams()
    xn = normalize_f32(x, inplace=inplace)
    n, d = xn.shape
    k = effective_k(n, k, include_self)
    block = plan_blocks(n, d, k, params, task_memory_gib)
    index = build_index(xn, params, seed)
    info = {"index": params.kind_for(n), "block_rows": block, "rows": n, "dim": d}
    if info["index"] != "flat":
        info["recall_at_k"] = round(sampled_recall(index, xn, k, include_self, recall_sample, seed), 4)
        if info["recall_at_k"] < recall_floor:
            raise AnnError(f"graphs: {info['index']} recall@{k} {info['recall_at_k']} on a {recall_sample}-row sample "
                           f"is below graphs.recall_floor={recall_floor}; raise graphs.ef_search / ivf_nprobe")
    return PreparedSearch(xn, k, block, index, info)


def knn_ann(x: np.ndarray, k: int, include_self: bool = True, params: AnnParams | None = None,
            task_memory_gib: float = 2.0, recall_sample: int = 1000, recall_floor: float = 0.0,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Cosine top-k of every row of ``x`` (N, d) in one process: ``(cols, sims, info)``.

    ``cols``/``sims``: (N, k) int64 / float64, rows sorted by the tie rule. ``info``: the index
    kind, block size and, for approximate indexes, ``recall_at_k`` on ``recall_sample`` rows
    (AnnError when it is below ``recall_floor``).
    """
    p = prepare_search(x, k, include_self, params, task_memory_gib, recall_sample, recall_floor, seed)
    cols, sims = search(p.index, p.xn, 0, len(p.xn), p.k, include_self, p.block_rows)
    return cols, sims, p.info
