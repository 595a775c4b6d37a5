"""Fallback item/user kNN graph when the graphs stage did not run but features exist.

Uses blast_ray.graphs.knn.knn_graph when it is importable (the shared contract); else an
equivalent blocked top-k cosine here (never an N x N dense matrix beyond one row block)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _blocked_knn(x: np.ndarray, k: int, block_rows: int = 4096) -> sp.csr_matrix:
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = x.shape[0]
    k = min(k, n)
    rows, cols = [], []
    for s in range(0, n, block_rows):
        sim = x[s : s + block_rows] @ x.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        rows.append(np.repeat(np.arange(s, s + sim.shape[0]), k))
        cols.append(top.ravel())
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(n, n))


def knn_normalized(x: np.ndarray, k: int = 10) -> sp.csr_matrix:
    """D^-1/2 S D^-1/2 of the binary top-k cosine graph of x (method section 2)."""
    try:
        from blast_ray.graphs.knn import knn_graph

        s = knn_graph(np.asarray(x, dtype=np.float32), k)
    except ImportError:
        s = _blocked_knn(np.asarray(x, dtype=np.float32), k)
    s = sp.csr_matrix(s, dtype=np.float64)
    deg = np.asarray(s.sum(axis=1)).ravel()
    inv = np.where(deg > 0, deg, 1.0) ** -0.5
    return (sp.diags(inv) @ s @ sp.diags(inv)).tocsr().astype(np.float32)
