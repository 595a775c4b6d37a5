"""Correctness of the sparse Sinkhorn, the exact top-q and the false negatives on real slices."""

from __future__ import annotations

import time
import warnings

import numpy as np
import ot
import pytest
import scipy.sparse as sp

from blast_ray.augment import (
    SinkhornNotConverged,
    default_marginals,
    distributed_sinkhorn,
    false_negative_candidates,
    marginals,
    sparse_sinkhorn,
    top_q_cells,
)
from blast_ray.augment.topq import dense_top_q
from blast_ray.graphs.knn import knn_graph


def _scientific_slice(folder, n_users=300):
    """First n_users users of Scientific (train split: items of the history + target), all 1,585 items."""
    rows, cols = [], []
    with open(folder / "Scientific.train.inter") as fh:
        next(fh)
        for line in fh:
            u, hist, tgt = line.rstrip("\n").split("\t")
            u = int(u)
            if u >= n_users:
                continue
            for it in hist.split() + [tgt]:
                rows.append(u)
                cols.append(int(it))
    feats = np.fromfile(folder / "Scientific.feat1CLS", dtype=np.float32).reshape(-1, 512)
    R = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, feats.shape[0]))
    R.sum_duplicates()
    R.data[:] = 1.0
    keep = np.diff(R.indptr) > 0
    return R[keep], feats


@pytest.fixture(scope="module")
def sci(dataset):
    R, feats = _scientific_slice(dataset("amazon-scientific-2018"))
    K = knn_graph(feats, 10)
    G = false_negative_candidates(R, [K])
    return R, G, K


def _exact_knn(x, k):  # tiny exact reference: dense cosine, top-k by argsort (N=1,585 is small)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ xn.T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return sp.csr_matrix((np.ones(idx.size), (np.repeat(np.arange(len(x)), k), idx.ravel())), shape=s.shape)


def test_false_negatives_match_definition(sci, dataset):
    R, G, K = sci
    # K from knn_graph agrees with an exact dense reference on nearly all rows (ties may differ)
    _, feats = _scientific_slice(dataset("amazon-scientific-2018"), 1)
    ref = _exact_knn(feats.astype(np.float64), 10)
    assert (K != 0).multiply(ref).nnz >= 0.99 * ref.nnz
    # G_u = (union of neighbours of the user's items) minus N_u, per user, by set arithmetic
    Kl = sp.csr_matrix(K)
    for u in range(0, R.shape[0], 7):
        items = set(R[u].indices)
        expect = set()
        for m in items:
            expect |= set(Kl[m].indices)
        assert set(G[u].indices) == expect - items
    assert R.multiply(G).nnz == 0 and G.nnz > R.nnz


@pytest.mark.parametrize("eps", [0.5, 0.1, 0.05])
def test_sparse_sinkhorn_matches_pot_dense(sci, eps):
    R, G, _ = sci
    a, b = default_marginals(R)
    C = np.zeros(R.shape)
    C[G.toarray() != 0] = -1.0
    C[R.toarray() != 0] = 1.0
    res = sparse_sinkhorn(R, G, eps=eps, tol=1e-12, max_iter=20000)
    assert res.converged
    P = res.dense_plan(R, G)
    # POT's log-domain Sinkhorn on the dense cost, run to a tight tolerance: same unique plan
    P_ref = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", stopThr=1e-13, numItermax=20000)
    assert np.abs(P - P_ref).max() <= 1e-8 * P_ref.max()
    np.testing.assert_allclose(P.sum(1), a, rtol=1e-9)
    np.testing.assert_allclose(P.sum(0), b, rtol=1e-9)


def test_top_q_equals_dense_top_q(sci):
    R, G, _ = sci
    res = sparse_sinkhorn(R, G, eps=0.1, tol=1e-10, max_iter=20000)
    # dense log plan with the same float operations as the sparse path: (f_u + g_i) + log K'_ui
    lk = np.full(R.shape, -1.0 / res.eps)
    lk[G.toarray() != 0] = 0.0
    lk[R.toarray() != 0] = -2.0 / res.eps
    log_plan = (res.f[:, None] + res.g[None, :]) + lk
    # the last q exceeds |G|, so cells outside G (rank-one part) must be enumerated too
    for q in (int(0.1 * R.nnz), int(0.3 * R.nnz), G.nnz + 500):
        u, i, v = top_q_cells(res.f, res.g, res.eps, R, G, q)
        ur, ir, vr = dense_top_q(log_plan, R.toarray(), q)
        assert len(u) == q
        assert np.array_equal(u, ur) and np.array_equal(i, ir)
        np.testing.assert_array_equal(v, vr)
        assert R[u, i].A1.sum() == 0
    assert (G[u, i].A1 == 0).any()  # the large-q case selects cells outside G


def test_small_eps_is_finite_and_warm_start(sci):
    R, G, _ = sci
    res = sparse_sinkhorn(R, G, eps=0.01, tol=1e-6, max_iter=5000, log=True)
    assert np.isfinite(res.f).all() and np.isfinite(res.g).all()
    assert np.isfinite(res.errors).all()
    P = res.dense_plan(R, G)
    assert np.isfinite(P).all() and (P >= 0).all()
    warm = sparse_sinkhorn(R, G, eps=0.01, tol=1e-6, max_iter=5000, init=(res.f, res.g))
    assert warm.n_iter <= 1


def test_unconverged_warns(sci):
    R, G, _ = sci
    with pytest.warns(SinkhornNotConverged, match="stopped after 2 iterations"):
        res = sparse_sinkhorn(R, G, eps=0.05, tol=1e-14, max_iter=2, log=True)
    assert not res.converged and res.n_iter == 2 and len(res.errors) == 2


def test_bad_inputs_fail_clearly(sci):
    R, G, _ = sci
    with pytest.raises(ValueError, match="disjoint"):
        sparse_sinkhorn(R, G + R)
    with pytest.raises(ValueError, match="equal mass"):
        sparse_sinkhorn(R, G, a=np.ones(R.shape[0]), b=np.ones(R.shape[1]))


def test_blocked_ray_equals_single_block(sci, ray_local):
    R, G, _ = sci
    one = distributed_sinkhorn(R, G, eps=0.1, tol=1e-10, max_iter=5000, num_blocks=1)
    single = sparse_sinkhorn(R, G, eps=0.1, tol=1e-10, max_iter=5000)
    np.testing.assert_array_equal(one.f, single.f)
    many = distributed_sinkhorn(R, G, eps=0.1, tol=1e-10, max_iter=5000, num_blocks=3)
    assert many.n_iter == one.n_iter
    P1, P3 = one.dense_plan(R, G), many.dense_plan(R, G)
    assert np.abs(P1 - P3).max() <= 1e-12 * P1.max()


# (row_target, col_target): the options of augment.row_target / augment.col_target, numbers as in
# the paper's Fig. 3c sweep.
MARGINAL_TARGETS = [
    ("mean_activity", "mean_popularity"),
    ("uniform", "uniform"),
    ("uniform", "mean_popularity"),
    ("mean_activity", "uniform"),
    (2.5, 0.3),
]


@pytest.mark.parametrize("row_target, col_target", MARGINAL_TARGETS, ids=lambda t: str(t))
def test_marginal_targets_match_pot_and_the_mass_rule(sci, row_target, col_target):
    """Each target gives the documented a, b (b rescaled to a's mass); our plan equals POT's dense
    plan for those marginals; and H is the default's H with plan values scaled by sum(a)/|D|."""
    R, G, _ = sci
    R, G = R[:40], G[:40]  # a small dense case: 40 real users x 1,585 items
    M, N = R.shape
    nnz = R.nnz
    a, b = marginals(R, row_target, col_target)
    a_u = {"mean_activity": nnz / M, "uniform": 1.0}.get(row_target, row_target)
    np.testing.assert_allclose(a, np.full(M, a_u), rtol=1e-15)
    np.testing.assert_allclose(b, np.full(N, a_u * M / N), rtol=1e-12)  # constant b, total sum(a)
    assert a.sum() == pytest.approx(b.sum(), rel=1e-12)

    C = np.zeros(R.shape)
    C[G.toarray() != 0] = -1.0
    C[R.toarray() != 0] = 1.0
    res = sparse_sinkhorn(R, G, eps=0.1, a=a, b=b, tol=1e-12, max_iter=20000)
    assert res.converged
    P = res.dense_plan(R, G)
    P_ref = ot.sinkhorn(a, b, C, 0.1, method="sinkhorn_log", stopThr=1e-13, numItermax=20000)
    assert np.abs(P - P_ref).max() <= 1e-8 * P_ref.max()
    np.testing.assert_allclose(P.sum(1), a, rtol=1e-9)
    np.testing.assert_allclose(P.sum(0), b, rtol=1e-9)

    base = sparse_sinkhorn(R, G, eps=0.1, tol=1e-12, max_iter=20000)
    q = 60
    u0, i0, v0 = top_q_cells(base.f, base.g, 0.1, R, G, q)
    u1, i1, v1 = top_q_cells(res.f, res.g, 0.1, R, G, q)
    np.testing.assert_array_equal(u1, u0)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_allclose(np.exp(v1), np.exp(v0) * a.sum() / nnz, rtol=1e-7)


@pytest.mark.parametrize("row_target, col_target", [("activity", "popularity"), ("activity", "mean_popularity"),
                                                     ("mean_activity", "popularity")], ids=str)
def test_own_degree_targets_match_pot_and_change_h(sci, row_target, col_target):
    """activity / popularity: a_u = deg_u, b_i = pop_i (floor 1), b rescaled to a's mass; our plan
    equals POT's for those marginals, and unlike the constant targets H itself changes."""
    R, G, _ = sci
    R, G = R[:40], G[:40]
    M, N = R.shape
    a, b = marginals(R, row_target, col_target)
    deg_u = np.maximum(np.diff(sp.csr_matrix(R).indptr), 1).astype(float)
    pop_i = np.maximum(np.asarray(R.sum(0)).ravel(), 1).astype(float)
    np.testing.assert_allclose(a, deg_u if row_target == "activity" else np.full(M, R.nnz / M), rtol=1e-15)
    want_b = pop_i if col_target == "popularity" else np.ones(N)
    np.testing.assert_allclose(b, want_b * a.sum() / want_b.sum(), rtol=1e-12)

    C = np.zeros(R.shape)
    C[G.toarray() != 0] = -1.0
    C[R.toarray() != 0] = 1.0
    res = sparse_sinkhorn(R, G, eps=0.1, a=a, b=b, tol=1e-12, max_iter=20000)
    assert res.converged
    P_ref = ot.sinkhorn(a, b, C, 0.1, method="sinkhorn_log", stopThr=1e-13, numItermax=20000)
    assert np.abs(res.dense_plan(R, G) - P_ref).max() <= 1e-8 * P_ref.max()

    base = sparse_sinkhorn(R, G, eps=0.1, tol=1e-12, max_iter=20000)
    q = 60
    u0, i0, _ = top_q_cells(base.f, base.g, 0.1, R, G, q)
    u1, i1, _ = top_q_cells(res.f, res.g, 0.1, R, G, q)
    assert set(zip(u1.tolist(), i1.tolist())) != set(zip(u0.tolist(), i0.tolist()))


def test_marginal_targets_reject_bad_values(sci):
    R, _, _ = sci
    for row, col in (("popular", "uniform"), (0, "uniform"), ("uniform", -1.0), (True, "uniform")):
        with pytest.raises(ValueError, match=r"augment\.(row|col)_target"):
            marginals(R, row, col)
