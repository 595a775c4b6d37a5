"""False-negative candidates G_u (method doc section 4), computed sparsely.

G = binarize(R @ K_union) - R, where K_union is the union of the per-modality binary item kNN
graphs (row m = the top-k neighbours of item m). T_u = I minus (N_u union G_u).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def union_graphs(graphs: list[sp.spmatrix]) -> sp.csr_matrix:
    """Binary union of N x N item graphs (e.g. the text and visual top-k kNN graphs)."""
    if not graphs:
        raise ValueError("no item kNN graph given: G_u needs at least one modality's graph")
    shape = graphs[0].shape
    for g in graphs:
        if g.shape != shape or shape[0] != shape[1]:
            raise ValueError(f"item graphs must all be square with the same shape, got {[x.shape for x in graphs]}")
    U = sp.csr_matrix(shape, dtype=np.float64)
    for g in graphs:
        U = U + (sp.csr_matrix(g) != 0).astype(np.float64)
    U.data[:] = 1.0
    return U.tocsr()


def false_negative_candidates(R: sp.spmatrix, item_graphs: list[sp.spmatrix]) -> sp.csr_matrix:
    """G = binarize(R @ K_union) - R as a binary float64 CSR (M x N), disjoint from R.

    Cost O(sum_u sum_{m in N_u} k) time and memory; never M x N dense.

    >>> import numpy as np, scipy.sparse as sp
    >>> R = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 1]]))
    >>> K = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [0, 1, 1]]))
    >>> false_negative_candidates(R, [K]).toarray().astype(int).tolist()
    [[0, 1, 0], [0, 1, 0]]
    """
    R = sp.csr_matrix(R, dtype=np.float64)
    R.data[:] = 1.0
    K = union_graphs(item_graphs)
    if K.shape[0] != R.shape[1]:
        raise ValueError(f"item graph has {K.shape[0]} items but R has {R.shape[1]}")
    reach = R @ K
    reach.data[:] = 1.0
    G = reach - reach.multiply(R)
    G = sp.csr_matrix(G)
    G.eliminate_zeros()
    G.data[:] = 1.0
    G.sort_indices()
    return G
