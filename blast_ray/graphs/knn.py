"""Blocked cosine top-k graphs, their normalization and combination (method doc section 2).

Pure functions, no I/O. Nothing here materializes an N x N dense matrix: similarities are
computed one row block at a time (``block_rows x N``), reduced to the top-k, and discarded.

Tie-breaking is deterministic (equal similarity: lower column index wins); similarities are
accumulated in float64 and ranked at 1e-12 resolution (``SIM_DECIMALS``), so the result does not
depend on ``block_rows`` nor on how the blocks are spread over Ray workers: blocked == dense ==
distributed, exactly (ties from duplicate rows included).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.sparse as sp
import torch

log = logging.getLogger(__name__)

# extra candidates pulled by topk so ties at the k-th place can be resolved by index without a
# full sort; rows whose tie run reaches past them fall back to a stable sort of the whole row
_TIE_SLACK = 8
# similarities are ranked after rounding to this many decimals (see topk_from_sims)
SIM_DECIMALS = 12


def l2_normalize(x: np.ndarray, log_zero: bool = True) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm, as float64 (dense, or CSR for sparse input); all-zero
    rows stay zero.

    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float64)
        if not np.isfinite(x.data).all():
            raise ValueError("sparse features contain NaN/inf; clean them before building a kNN graph")
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        zero = norms == 0
        if log_zero and zero.any():
            warnings.warn(f"{int(zero.sum())} of {x.shape[0]} rows are all-zero: their neighbours are arbitrary (lowest indices)")
        norms[zero] = 1.0
        return sp.csr_matrix(sp.diags(1.0 / norms) @ x)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array (rows x dim), got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{bad} rows contain NaN/inf; clean the features before building a kNN graph")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if log_zero and zero.any():
        warnings.warn(f"{int(zero.sum())} of {len(x)} rows are all-zero: their neighbours are arbitrary (lowest indices)")
    norms[zero] = 1.0
    return x / norms


def effective_k(n: int, k: int, include_self: bool) -> int:
    """k clamped to the number of candidate columns (n, or n - 1 when self is excluded)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    limit = n if include_self else n - 1
    if limit < 1:
        raise ValueError(f"cannot build a kNN graph over {n} row(s) with include_self={include_self}")
    if k > limit:
        warnings.warn(f"k={k} > {limit} candidates per row; using k={limit}")
        return limit
    return k


def topk_block(
    xn_block: np.ndarray | torch.Tensor | sp.spmatrix,
    xn_all: np.ndarray | torch.Tensor | sp.spmatrix,
    row_offset: int,
    k: int,
    include_self: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns (by cosine of already-normalized rows) for one row block.

    ``xn_block`` / ``xn_all``: dense arrays/tensors or scipy sparse matrices (both the same kind).
    Returns ``(cols, sims)``: int64 and float64 arrays of shape (block, k), each row sorted by
    decreasing similarity, ties by increasing column. ``row_offset`` is the global index of the
    block's first row (used to exclude self when ``include_self`` is False).
    """
    if sp.issparse(xn_all):
        # sparse rows (co-occurrence): the product is sparse, only the block is densified
        sims = torch.from_numpy(np.asarray((xn_block @ xn_all.T).toarray(), dtype=np.float64))
    else:
        a = torch.as_tensor(xn_block, dtype=torch.float64)
        b = torch.as_tensor(xn_all, dtype=torch.float64)
        sims = a @ b.T  # (block, N): the only dense piece, bounded by block_rows * N
    return topk_from_sims(sims, row_offset, k, include_self)


def topk_from_sims(sims: torch.Tensor, row_offset: int, k: int, include_self: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic top-k of each row of a (block, N) similarity tensor (see ``topk_block``)."""
    n_rows, n = sims.shape
    # BLAS rounds a dot product differently depending on where it falls in the tiling, so two
    # mathematically equal similarities (duplicate rows) can differ in the last bits; comparing at
    # 1e-12 resolution makes them tie, and ties go to the lower index, whatever the block split
    sims = torch.round(sims, decimals=SIM_DECIMALS)
    if not include_self:
        r = torch.arange(n_rows)
        sims[r, r + row_offset] = -float("inf")
    kk = min(n, k + _TIE_SLACK)
    vals, idx = torch.topk(sims, kk, dim=1, largest=True, sorted=True)
    # order candidates by (value desc, index asc): a stable sort by index then by value
    by_idx = torch.argsort(idx, dim=1)
    vals, idx = torch.gather(vals, 1, by_idx), torch.gather(idx, 1, by_idx)
    by_val = torch.sort(vals, dim=1, descending=True, stable=True).indices
    vals, idx = torch.gather(vals, 1, by_val), torch.gather(idx, 1, by_val)
    if kk < n:
        # a tie at the k-th place that also fills the last candidate may hide lower indices
        # outside the candidate set: redo those rows with a full stable sort
        unsure = (vals[:, k - 1] == vals[:, kk - 1]).nonzero().flatten()
        if len(unsure):
            order = torch.sort(sims[unsure], dim=1, descending=True, stable=True).indices[:, :kk]
            idx[unsure] = order
            vals[unsure] = torch.gather(sims[unsure], 1, order)
    return idx[:, :k].numpy().astype(np.int64), vals[:, :k].numpy()


def _to_csr(cols: np.ndarray, n: int, sims: np.ndarray | None = None) -> sp.csr_matrix:
    k = cols.shape[1]
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    data = np.ones(n * k, dtype=np.float32) if sims is None else sims.reshape(-1).astype(np.float32)
    m = sp.csr_matrix((data, cols.reshape(-1), indptr), shape=(n, n))
    m.sort_indices()
    return m


def knn_topk(
    x: np.ndarray, k: int, include_self: bool = True, block_rows: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Blocked cosine top-k of every row of ``x`` against all rows: ``(cols, sims)``, both (N, k).

    Objective: for each row i, the k columns j maximizing cos(x_i, x_j) (self included unless
    ``include_self=False``), ties broken by lower j. Peak memory O(block_rows * N + N * d).

    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> knn_topk(x, 2)[0].tolist()
    [[0, 1], [1, 0], [2, 1]]
    """
    xn = l2_normalize(x)
    n = xn.shape[0]
    k = effective_k(n, k, include_self)
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    cols = np.empty((n, k), dtype=np.int64)
    sims = np.empty((n, k), dtype=np.float64)
    t_all = xn if sp.issparse(xn) else torch.from_numpy(xn)
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        cols[start:stop], sims[start:stop] = topk_block(t_all[start:stop], t_all, start, k, include_self)
    return cols, sims


def knn_graph(x: np.ndarray, k: int, include_self: bool = True, block_rows: int = 4096) -> sp.csr_matrix:
    """Binary top-k cosine kNN graph of the rows of ``x`` (method doc section 2), blocked.

    Parameters
    ----------
    x : (N, d) array of features (any float dtype; rows need not be normalized), or a scipy
        sparse matrix (e.g. co-occurrence rows; each block's products are densified, never N x N).
    k : neighbours per row (clamped, with a warning, to the number of candidates).
    include_self : whether row i may count itself among its k neighbours (reference code: yes).
    block_rows : rows per similarity block; peak extra memory is ``block_rows * N`` float64.

    Returns
    -------
    (N, N) scipy CSR, float32 ones, exactly k entries per row, sorted column indices. Never
    materializes an N x N dense matrix.

    Example
    -------
    >>> g = knn_graph(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), k=2)
    >>> g.toarray().astype(int).tolist()
    [[1, 1, 0], [1, 1, 0], [0, 1, 1]]
    """
    cols, _ = knn_topk(x, k, include_self=include_self, block_rows=block_rows)
    return _to_csr(cols, len(cols))


def sym_normalize(s: sp.spmatrix) -> sp.csr_matrix:
    """D^-1/2 S D^-1/2 with D the row sums of S (FREEDOM's ``compute_normalized_laplacian``).

    Entry (r, c) becomes s_rc / sqrt(d_r d_c). Rows with no entries keep degree 0 and contribute
    nothing (no division by zero). For a kNN graph every row has k entries, so values are 1/k.

    >>> sym_normalize(sp.csr_matrix(np.array([[1.0, 1.0], [0.0, 1.0]]))).toarray().round(4).tolist()
    [[0.5, 0.7071], [0.0, 1.0]]
    """
    s = sp.csr_matrix(s, dtype=np.float64)
    deg = np.asarray(s.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    nz = deg > 0
    inv[nz] = deg[nz] ** -0.5
    coo = s.tocoo()
    vals = coo.data * inv[coo.row] * inv[coo.col]
    out = sp.csr_matrix((vals, (coo.row, coo.col)), shape=s.shape)
    out.sort_indices()
    return out


def combine_graphs(
    graphs: dict[str, sp.spmatrix], weights: dict[str, float], log_fn=None,
    row_masks: dict[str, np.ndarray] | None = None,
) -> tuple[sp.csr_matrix, dict[str, float]]:
    """S = sum_m alpha_m S~^m over the modalities present, weights renormalized to sum 1.

    ``graphs``: modality -> normalized matrix (all the same shape). ``weights``: modality ->
    alpha (e.g. {"visual": 0.1, "text": 0.9}). A modality in ``graphs`` without a weight is an
    error; a weight without a graph is a missing modality and is dropped (logged).
    ``row_masks``: optional modality -> bool (N,) of the rows that HAVE that modality (e.g. items
    with an image). The method's "missing modality: drop it and renormalize" then applies per
    row: row i is sum over the modalities m it has of alpha_m / (sum of those alphas) S~^m[i], so
    an item without an image keeps a full-weight text row. Without masks every row has every
    modality (the global rule).
    Returns the combined CSR and the effective (renormalized, global) weights.

    >>> a = sp.identity(2, format="csr")
    >>> s, w = combine_graphs({"text": a}, {"text": 0.9, "visual": 0.1})
    >>> w
    {'text': 1.0}
    """
    if not graphs:
        raise ValueError("combine_graphs needs at least one modality graph")
    missing = [m for m in graphs if m not in weights]
    if missing:
        raise ValueError(f"no weight for modalities {missing}; weights given for {sorted(weights)}")
    dropped = [m for m in weights if m not in graphs]
    if dropped:
        (log_fn or log.info)(f"modalities {dropped} absent: dropped, remaining weights renormalized")
    total = float(sum(weights[m] for m in graphs))
    if total <= 0:
        raise ValueError(f"weights of the present modalities {sorted(graphs)} sum to {total}; need > 0")
    eff = {m: float(weights[m]) / total for m in graphs}
    shapes = {g.shape for g in graphs.values()}
    if len(shapes) != 1:
        raise ValueError(f"modality graphs have different shapes {shapes}")
    row_masks = row_masks or {}
    unknown = [m for m in row_masks if m not in graphs]
    if unknown:
        raise ValueError(f"row_masks for modalities {unknown} that have no graph")
    n_rows = next(iter(shapes))[0]
    if not row_masks or all(np.asarray(row_masks[m], bool).all() for m in row_masks):
        per_row = {m: None for m in graphs}
    else:
        have = {m: (np.asarray(row_masks[m], dtype=bool) if m in row_masks else np.ones(n_rows, bool)) for m in graphs}
        for m, h in have.items():
            if h.shape != (n_rows,):
                raise ValueError(f"row_masks[{m!r}] has shape {h.shape}, expected ({n_rows},)")
        denom = sum(eff[m] * have[m] for m in graphs)
        safe = np.where(denom > 0, denom, 1.0)
        per_row = {m: np.where(have[m], eff[m] / safe, 0.0) for m in graphs}
    out = None
    for m, g in graphs.items():
        g = sp.csr_matrix(g, dtype=np.float64)
        term = g * eff[m] if per_row[m] is None else sp.diags(per_row[m]) @ g
        out = term if out is None else out + term
    out = sp.csr_matrix(out)
    out.sort_indices()
    return out, eff
