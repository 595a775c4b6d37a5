"""Exact top-q plan entries among the cells with R_ui = 0, without materialising M x N.

Cells in G have log value f_u + g_i (kernel entry 1 after rescaling); all other non-R cells have
(f_u + g_i) - 1/eps: a rank-one structure, so their largest values come from sorted f and g.
A threshold search (count of pairs above tau by searchsorted, O(M log N) per probe) finds the
cut; the pairs above a slightly lower cut are enumerated, cells in R or G removed, merged with
the G cells, and the exact top q taken.

Tie rule (deterministic): larger value first, then smaller user_idx, then smaller item_idx.
Values are computed with the same float operations as the dense reference
``(f[:, None] + g[None, :]) + log K'``, so the selected set equals the dense top-q exactly.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _pairs_at_least(f: np.ndarray, g_sorted_asc: np.ndarray, t: float) -> int:
    # number of (u, i) with f_u + g_i >= t
    return int((g_sorted_asc.size - np.searchsorted(g_sorted_asc, t - f, side="left")).sum())


def top_q_cells(
    f: np.ndarray, g: np.ndarray, eps: float, R: sp.csr_matrix, G: sp.csr_matrix, q: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, items, log_values) of the q largest plan entries over cells with R_ui = 0.

    Sorted by the tie rule. Returns fewer than q when fewer such cells exist.

    >>> import numpy as np, scipy.sparse as sp
    >>> R = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]]))
    >>> G = sp.csr_matrix(np.array([[0, 0, 1], [0, 0, 0]]))
    >>> u, i, v = top_q_cells(np.array([0., 1.]), np.array([0., 0., 0.]), 1.0, R, G, 2)
    >>> list(zip(u.tolist(), i.tolist()))
    [(0, 2), (1, 0)]
    """
    R = sp.csr_matrix(R)
    G = sp.csr_matrix(G)
    M, N = R.shape
    q = int(q)
    log_other = -1.0 / eps
    gr, gc = G.nonzero()
    g_vals = (f[gr] + g[gc]) + 0.0
    n_other_total = M * N - R.nnz - G.nnz
    if q <= 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0)
    # excluded cells (R or G) by their rank-one sum f+g, for counting "other" cells above a cut
    rr, rc = R.nonzero()
    excl_sums = np.sort(np.concatenate([f[rr] + g[rc], f[gr] + g[gc]]))
    g_sorted = np.sort(g)
    g_vals_sorted = np.sort(g_vals)

    def count(tau: float) -> int:  # cells (G or other) with value >= tau (approximately, see slack)
        n_g = g_vals_sorted.size - np.searchsorted(g_vals_sorted, tau, side="left")
        s = tau - log_other
        n_o = _pairs_at_least(f, g_sorted, s) - (excl_sums.size - np.searchsorted(excl_sums, s, side="left"))
        return int(n_g + n_o)

    need = min(q, n_other_total + G.nnz)
    hi = max(g_vals.max(initial=-np.inf), f.max() + g.max() + log_other)
    lo = min(g_vals.min(initial=np.inf), f.min() + g.min() + log_other)
    # bisection for the largest tau with count(tau) >= need
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if count(mid) >= need:
            lo = mid
        else:
            hi = mid
    slack = 1e-9 * (1.0 + abs(lo))  # rounding of (f+g)-1/eps vs f+g >= tau+1/eps
    tau = lo - slack
    # enumerate "other" candidates: for each user the items with g_i >= tau - log_other - f_u
    order_g = np.argsort(-g, kind="stable")
    g_desc = g[order_g]
    cnt = (np.searchsorted(-g_desc, -(tau - log_other - slack - f), side="right")).astype(np.int64)
    users = np.repeat(np.arange(M, dtype=np.int64), cnt)
    starts = np.repeat(np.cumsum(cnt) - cnt, cnt)
    pos = np.arange(users.size, dtype=np.int64) - starts
    items = order_g[pos].astype(np.int64)
    if users.size:
        excl = (R[users, items].A1 != 0) | (G[users, items].A1 != 0)
        users, items = users[~excl], items[~excl]
    o_vals = (f[users] + g[items]) + log_other
    keep_g = g_vals >= tau
    U = np.concatenate([users, gr[keep_g].astype(np.int64)])
    I = np.concatenate([items, gc[keep_g].astype(np.int64)])
    V = np.concatenate([o_vals, g_vals[keep_g]])
    order = np.lexsort((I, U, -V))[:q]
    return U[order], I[order], V[order]


def dense_top_q(log_plan: np.ndarray, R: np.ndarray, q: int):
    """Reference: top q of a dense log plan over cells with R == 0, same tie rule (tests only)."""
    M, N = log_plan.shape
    uu, ii = np.nonzero(np.asarray(R) == 0)
    v = log_plan[uu, ii]
    order = np.lexsort((ii, uu, -v))[:q]
    return uu[order], ii[order], v[order]
