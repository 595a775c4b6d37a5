"""Ray-distributed blocked top-k: the normalized matrix goes into the object store once, one Ray
task per row range computes its blocks' top-k against all rows (``topk_block``), the driver
stitches the (N, k) results. Same numbers as ``knn_topk`` exactly (deterministic ties, float64).
"""

from __future__ import annotations

import logging

import numpy as np

from blast_ray.graphs.knn import _to_csr, effective_k, l2_normalize, topk_block
from blast_ray.progress import Progress, get_in_order, wait_all

log = logging.getLogger("blast_ray.graphs")


def _row_ranges(n: int, block_rows: int, num_blocks: int) -> list[tuple[int, int]]:
    if num_blocks and num_blocks > 0:
        step = -(-n // num_blocks)
    else:
        step = block_rows
    return [(s, min(n, s + step)) for s in range(0, n, step)]


def _range_topk(xn_all, start: int, stop: int, k: int, include_self: bool, block_rows: int):
    cols = np.empty((stop - start, k), dtype=np.int64)
    sims = np.empty((stop - start, k), dtype=np.float64)
    for s in range(start, stop, block_rows):
        e = min(stop, s + block_rows)
        cols[s - start : e - start], sims[s - start : e - start] = topk_block(xn_all[s:e], xn_all, s, k, include_self)
    return cols, sims


def knn_topk_ray(
    x, k: int, include_self: bool = True, block_rows: int = 4096, num_blocks: int = 0, num_cpus: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``knn_topk`` on Ray tasks: ``(cols, sims)``, both (N, k).

    ``num_blocks`` > 0: that many tasks (row ranges), each looping over ``block_rows`` chunks;
    0: one task per ``block_rows`` rows. Per task peak memory: ``block_rows * N`` float64 plus the
    shared normalized matrix (zero-copy from the object store for dense input).

    >>> from blast_ray.runtime import ensure_ray  # doctest: +SKIP
    >>> cols, sims = knn_topk_ray(np.random.default_rng(0).normal(size=(100, 8)), 5)  # doctest: +SKIP
    """
    from blast_ray.runtime import ensure_ray

    ray = ensure_ray()
    xn = l2_normalize(x)
    n = xn.shape[0]
    k = effective_k(n, k, include_self)
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    ranges = _row_ranges(n, block_rows, num_blocks)
    remote = ray.remote(num_cpus=num_cpus)(_range_topk)
    ref = ray.put(xn)
    futures = [remote.remote(ref, s, e, k, include_self, block_rows) for s, e in ranges]
    log.debug("kNN top-%d over %d rows: %d Ray tasks", k, n, len(futures))
    parts = get_in_order(ray, futures, [e - s for s, e in ranges], Progress("graphs: kNN", n, "rows"))
    del ref
    cols = np.concatenate([p[0] for p in parts])
    sims = np.concatenate([p[1] for p in parts])
    return cols, sims


def knn_graph_ray(x, k: int, include_self: bool = True, block_rows: int = 4096, num_blocks: int = 0):
    """Binary kNN CSR like ``knn_graph``, computed on Ray tasks."""
    cols, _ = knn_topk_ray(x, k, include_self, block_rows, num_blocks)
    return _to_csr(cols, len(cols))


class IndexRows:
    """The rows an index holds, sliced like the (N, d) array they were added from: ``rows[s:e]``
    reconstructs rows s..e-1 (flat and HNSW storage hold the vectors as added; IVF needs its
    direct map). What a query task searches with when the rows are not shipped beside the index."""

    def __init__(self, index):
        self.index = index

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __getitem__(self, sl: slice) -> np.ndarray:
        start, stop, _ = sl.indices(len(self))
        return self.index.reconstruct_n(start, max(0, stop - start))


def with_direct_map(faiss, index):
    """``index``, made able to reconstruct its rows by id (IVF lists need a direct map)."""
    try:
        faiss.extract_index_ivf(index).make_direct_map()
    except RuntimeError:  # not an IVF index: its storage reconstructs as is
        pass
    return index


def read_index_chunked(faiss, blob, chunk_bytes: int = 1 << 20):
    """The index serialized in ``blob`` (``faiss.serialize_index``'s uint8 array), read in
    ``chunk_bytes`` pieces.

    ``faiss.deserialize_index`` first copies the whole blob into a ``std::vector`` and parses that:
    for a moment a task holds the blob (mapped from the object store), that copy and the index,
    three times the index size (at 10M synthetic reviews' 993k x 384 user HNSW, the 6.18 GiB query
    task). Read through a callback, the copy is one chunk: the blob and the index, twice.
    """
    view = memoryview(np.ascontiguousarray(blob, dtype=np.uint8)).cast("B")
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        chunk = view[pos : pos + n].tobytes()
        pos += len(chunk)
        return chunk

    return faiss.read_index(faiss.PyCallbackIOReader(read, chunk_bytes))


def _range_search_ann(index_bytes, xn, start: int, stop: int, k: int, include_self: bool, block_rows: int,
                      threads: int):
    """Query task: search rows [start, stop) against the deserialized index; ``xn`` None: the rows
    are reconstructed from the index itself, one block at a time (nothing else is shipped)."""
    import faiss

    from blast_ray.graphs.ann import search

    faiss.omp_set_num_threads(max(1, threads))  # one task per CPU slot: no OpenMP oversubscription
    index = read_index_chunked(faiss, index_bytes)
    return search(index, IndexRows(index) if xn is None else xn, start, stop, k, include_self, block_rows)


def _query_ann(ray, index_ref, x_ref, n: int, k: int, include_self: bool, block_rows: int, num_blocks: int,
               num_cpus: float, index_kind: str, fetch: bool = True, task_memory_gib: float | None = None):
    """Search rows [0, n) of the object-store rows ``x_ref`` (None: the rows the index holds)
    against ``index_ref``, one Ray task per
    row range: ``(cols, sims, tasks)``; ``fetch=False``: ``(refs, None, tasks)``, the tasks'
    ``(cols, sims)`` row-range results left in the object store, in row order (this process waits
    for them without reading them)."""
    if not num_blocks:
        # at least one task per CPU slot of the cluster: a budget that fits all rows in one block
        # would otherwise search them on one thread (each task still searches in blocks of <= block_rows)
        slots = int(ray.cluster_resources().get("CPU", 1) // max(num_cpus, 1e-3))
        num_blocks = max(-(-n // block_rows), min(slots, n))
    ranges = _row_ranges(n, block_rows, num_blocks)
    options: dict = {"num_cpus": num_cpus}
    if task_memory_gib:
        # each task holds its own copy of the index plus one block: Ray runs only as many at once as
        # the node's memory holds (capped at the cluster's total, or a large budget never schedules)
        options["memory"] = int(min(task_memory_gib * 2**30, ray.cluster_resources().get("memory", 0) or 2**62))
    remote = ray.remote(**options)(_range_search_ann)
    futures = [remote.remote(index_ref, x_ref, s, e, k, include_self, block_rows, int(num_cpus)) for s, e in ranges]
    log.debug("kNN top-%d over %d rows (%s index): %d Ray tasks of <= %d rows", k, n, index_kind, len(futures), block_rows)
    progress = Progress("graphs: kNN", n, "rows")
    if not fetch:
        wait_all(ray, futures, [e - s for s, e in ranges], progress)
        return futures, None, len(futures)
    parts = get_in_order(ray, futures, [e - s for s, e in ranges], progress)
    return np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts]), len(futures)


def _cpu_index(faiss, index, params):
    if params.use_gpu and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        return faiss.index_gpu_to_cpu(index)  # pragma: no cover - GPU indexes do not serialize
    return index


def knn_ann_ray(x, k: int, include_self: bool = True, params=None, task_memory_gib: float = 2.0,
                recall_sample: int = 1000, recall_floor: float = 0.0, num_blocks: int = 0,
                num_cpus: float = 1.0, seed: int = 0):
    """``ann.knn_ann`` with the queries sharded over Ray tasks: ``(cols, sims, info)``.

    The driver builds the FAISS index once and puts it (serialized) and the normalised rows in the
    object store; each task searches one row range in blocks sized by ``task_memory_gib``
    (``ann.plan_blocks``), so a task's memory is the index plus one block, whatever N is.
    ``num_blocks`` > 0: that many tasks; 0: one task per block. Same result as ``knn_ann``.
    :func:`knn_ann_ray_loaded` is the same search where a task loads the rows (the driver never
    holds them).
    """
    import faiss

    from blast_ray.graphs.ann import AnnParams, prepare_search
    from blast_ray.runtime import ensure_ray

    params = params or AnnParams()
    p = prepare_search(x, k, include_self, params, task_memory_gib, recall_sample, recall_floor, seed)
    ray = ensure_ray()
    index_ref, x_ref = ray.put(faiss.serialize_index(_cpu_index(faiss, p.index, params))), ray.put(p.xn)
    cols, sims, tasks = _query_ann(ray, index_ref, x_ref, len(p.xn), p.k, include_self, p.block_rows, num_blocks,
                                   num_cpus, p.info["index"], task_memory_gib=task_memory_gib)
    del index_ref, x_ref
    info = dict(p.info, tasks=tasks)
    return cols, sims, info


def _prepare_loaded(load, k: int, include_self: bool, params, task_memory_gib: float, recall_sample: int,
                    recall_floor: float, seed: int, threads: int):
    """Ray task: ``load()`` the rows, normalise them in place, build the index; returns (meta, the
    serialized index), which goes to the object store from here. The rows are not returned: the
    query tasks reconstruct them from the index (:class:`IndexRows`), so this task's peak is the
    rows plus the index while building, then the index plus its serialized copy, never the rows
    and two copies of the index (at 10M synthetic reviews' 993k x 384 users: 7.6 -> ~4 GiB)."""
    import faiss

    from blast_ray.graphs.ann import prepare_search

    faiss.omp_set_num_threads(max(1, threads))
    x, about = load()
    if x is None:
        return {"about": about}, None
    p = prepare_search(x, k, include_self, params, task_memory_gib, recall_sample, recall_floor, seed, inplace=True)
    meta = {"about": about, "n": len(p.xn), "k": p.k, "block_rows": p.block_rows, "info": p.info}
    del x
    p.xn = None  # the index holds the rows (flat / HNSW storage; IVF with its direct map)
    index = with_direct_map(faiss, _cpu_index(faiss, p.index, params))
    p.index = None
    blob = faiss.serialize_index(index)
    del index
    return meta, blob


def knn_ann_ray_loaded(load, k: int, include_self: bool = True, params=None, task_memory_gib: float = 2.0,
                       recall_sample: int = 1000, recall_floor: float = 0.0, num_blocks: int = 0,
                       num_cpus: float = 1.0, seed: int = 0, build_cpus: int = 1, fetch: bool = True):
    """:func:`knn_ann_ray` where a Ray task loads the rows itself: ``(about, cols, sims, info)``.

    ``load``: a picklable zero-argument callable run inside the task, returning ``(x, about)``:
    ``x`` the (N, d) rows to search (owned: normalised in place) or None to search nothing,
    ``about`` a small picklable value handed back as is (e.g. which rows ``x`` holds). The task
    builds the index and puts it in the object store; the query tasks read it from there and
    reconstruct their query rows from it. The driver holds neither: its memory does not grow with
    N x d. With ``x`` None, ``cols``/``sims``/``info`` are None. An error inside the task (e.g. the recall floor's
    AnnError) is raised here as itself, one line. ``build_cpus``: CPUs and FAISS threads of that
    one task (``graphs.index_build_cpus``); each query task gets ``num_cpus``. ``fetch=False``:
    ``cols`` is the list of the query tasks' refs (each ``(cols, sims)`` of a row range, in row
    order) and ``sims`` None: the (N, k) result stays in the object store for a task to assemble.
    """
    from ray.exceptions import RayTaskError

    from blast_ray.graphs.ann import AnnParams
    from blast_ray.runtime import ensure_ray

    params = params or AnnParams()
    ray = ensure_ray()
    # the index build is one task: it gets build_cpus CPUs and as many FAISS threads (the queries
    # are many tasks of num_cpus each)
    prepare = ray.remote(num_cpus=max(num_cpus, build_cpus), num_returns=2)(_prepare_loaded)
    meta_ref, index_ref = prepare.remote(load, k, include_self, params, task_memory_gib, recall_sample,
                                         recall_floor, seed, max(int(num_cpus), int(build_cpus)))
    try:
        meta = ray.get(meta_ref)
    except RayTaskError as e:  # the task's own error, without Ray's traceback wrapper
        try:  # the same error: read here, or Ray prints it once more as "unhandled"
            ray.get(index_ref)
        except RayTaskError:
            pass
        raise (e.cause if isinstance(e.cause, Exception) else e) from None
    if "n" not in meta:
        return meta["about"], None, None, None
    cols, sims, tasks = _query_ann(ray, index_ref, None, meta["n"], meta["k"], include_self, meta["block_rows"],
                                   num_blocks, num_cpus, meta["info"]["index"], fetch, task_memory_gib)
    del index_ref
    return meta["about"], cols, sims, dict(meta["info"], tasks=tasks)
