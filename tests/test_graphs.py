"""kNN graphs: blocked == dense exactly on real features, hand-checked normalization/combination,
Ray-distributed blocks == single process."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from blast_ray.graphs import combine_graphs, knn_graph, knn_topk, sym_normalize


def dense_reference(x: np.ndarray, k: int, include_self: bool) -> tuple[np.ndarray, np.ndarray]:
    """Full N x N cosine (small N only), ordered by (similarity desc, index asc)."""
    xn = x.astype(np.float64)
    norms = np.linalg.norm(xn, axis=1, keepdims=True)
    norms[norms == 0] = 1
    xn = xn / norms
    s = np.round(xn @ xn.T, 12)  # the documented ranking resolution (knn.SIM_DECIMALS)
    if not include_self:
        np.fill_diagonal(s, -np.inf)
    n = len(s)
    order = np.lexsort((np.broadcast_to(np.arange(n), s.shape), -s), axis=1)[:, :k]
    return order, np.take_along_axis(s, order, 1)


@pytest.fixture(scope="module")
def feat1cls(dataset) -> np.ndarray:
    x = np.fromfile(dataset("amazon-scientific-2018") / "Scientific.feat1CLS", dtype=np.float32)
    return x.reshape(-1, 512)  # 1,585 items x 512 (UniSRec text CLS features)


@pytest.fixture(scope="module")
def scientific_cooc(dataset) -> sp.csr_matrix:
    """Item co-occurrence vectors (items x users, binary) from the real Scientific train sequences."""
    d = dataset("amazon-scientific-2018")
    df = pd.read_csv(d / "Scientific.train.inter", sep="\t")
    users, items = [], []
    for u, seq, i in zip(df.iloc[:, 0], df.iloc[:, 1].astype(str), df.iloc[:, 2]):
        for it in [*seq.split(), i]:
            users.append(int(u))
            items.append(int(it))
    r = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(max(users) + 1, 1585))
    r.data[:] = 1.0
    return sp.csr_matrix(r.T)


@pytest.mark.parametrize(("block_rows", "include_self"), [(97, True), (4096, False)])
def test_blocked_equals_dense_scientific_feat1cls(feat1cls, include_self, block_rows):
    cols, sims = knn_topk(feat1cls, 10, include_self=include_self, block_rows=block_rows)
    ref_cols, ref_sims = dense_reference(feat1cls, 10, include_self)
    np.testing.assert_array_equal(cols, ref_cols)
    np.testing.assert_allclose(sims, ref_sims, rtol=0, atol=2e-12)  # both rounded at 1e-12
    g = knn_graph(feat1cls, 10, include_self=include_self, block_rows=block_rows)
    assert g.shape == (1585, 1585) and (g.getnnz(axis=1) == 10).all() and set(g.data) == {1.0}
    assert g.diagonal().sum() == (1585 if include_self else 0)
    np.testing.assert_array_equal(np.sort(ref_cols, 1), g.indices.reshape(-1, 10))


def test_ties_break_by_lower_index_across_blocks(feat1cls):
    # duplicated real rows make exact ties: the lower index must win whatever the block split
    x = np.concatenate([feat1cls[:50], feat1cls[:50], feat1cls[:50]])
    a = knn_topk(x, 5, block_rows=7)[0]
    b = knn_topk(x, 5, block_rows=150)[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, dense_reference(x, 5, True)[0])
    assert (a[0, :3] == [0, 50, 100]).all()


def test_sparse_cooc_matches_dense(scientific_cooc):
    cols, sims = knn_topk(scientific_cooc, 10, block_rows=500)
    ref_cols, ref_sims = dense_reference(scientific_cooc.toarray(), 10, True)
    # sparse and dense products sum in different orders: values agree to 1e-12 at every rank
    np.testing.assert_allclose(sims, ref_sims, rtol=0, atol=2e-12)
    assert (cols == ref_cols).mean() > 0.95


def test_sym_normalize_hand_case():
    # S (binary, rows: 0 -> {0,1}, 1 -> {1,2}, 2 -> {0,1,2}); row degrees d = (2, 2, 3)
    s = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=float))
    got = sym_normalize(s).toarray()
    d = np.array([2.0, 2.0, 3.0])
    want = np.array([
        [1 / 2, 1 / 2, 0],
        [0, 1 / 2, 1 / np.sqrt(6)],
        [1 / np.sqrt(6), 1 / np.sqrt(6), 1 / 3],
    ])
    np.testing.assert_allclose(got, want, atol=1e-15)
    np.testing.assert_allclose(got, s.toarray() / np.sqrt(np.outer(d, d)), atol=1e-15)
    # an empty row stays empty (no division by zero)
    e = sym_normalize(sp.csr_matrix(np.array([[0, 0], [1, 1.0]])))
    assert np.isfinite(e.toarray()).all() and e[0].nnz == 0


def test_combine_hand_case_and_renormalization():
    t = sp.csr_matrix(np.array([[0.5, 0.5], [0.5, 0.5]]))
    v = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0]]))
    both, w = combine_graphs({"text": t, "visual": v}, {"visual": 0.1, "text": 0.9})
    assert w == pytest.approx({"text": 0.9, "visual": 0.1})
    np.testing.assert_allclose(both.toarray(), [[0.55, 0.45], [0.45, 0.55]])
    only_text, w = combine_graphs({"text": t}, {"visual": 0.1, "text": 0.9})
    assert w == {"text": 1.0}
    np.testing.assert_allclose(only_text.toarray(), t.toarray())
    # weights (3, 1) renormalize to (0.75, 0.25)
    s, w = combine_graphs({"text": t, "visual": v}, {"visual": 1.0, "text": 3.0})
    np.testing.assert_allclose(s.toarray(), 0.75 * t.toarray() + 0.25 * v.toarray())
    with pytest.raises(ValueError, match="no weight"):
        combine_graphs({"cooc": t}, {"text": 1.0})


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="NaN"):
        knn_graph(np.array([[1.0, np.nan], [0.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn_graph(np.eye(3), 0)
    with pytest.warns(UserWarning, match="using k=2"):
        assert knn_graph(np.eye(3), 5, include_self=False).getnnz(axis=1).tolist() == [2, 2, 2]


def test_ray_blocks_equal_single_process(ray_local, feat1cls, scientific_cooc):
    from blast_ray.graphs import knn_topk_ray

    ref = knn_topk(feat1cls, 10, include_self=False, block_rows=4096)
    got = knn_topk_ray(feat1cls, 10, include_self=False, block_rows=128, num_blocks=3)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    got = knn_topk_ray(feat1cls, 10, block_rows=400, num_blocks=0)  # one task per 400 rows
    np.testing.assert_array_equal(got[0], knn_topk(feat1cls, 10)[0])
    ref = knn_topk(scientific_cooc, 10, block_rows=500)
    got = knn_topk_ray(scientific_cooc, 10, block_rows=500, num_blocks=2)
    np.testing.assert_array_equal(got[0], ref[0])
