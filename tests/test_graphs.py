"""kNN graphs: blocked == dense exactly on real features, hand-checked normalization/combination,
Ray-distributed blocks == single process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from blast_ray.graphs import combine_graphs, knn_graph, knn_topk, sym_normalize

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


# ---- (near-)identical feature rows: detection and the graphs stage's fallback ------------------
def test_row_spread_on_real_features(feat1cls):
    """Informative real features are not degenerate; the same rows repeated are; a few distinct
    rows among many identical ones are still caught (the reference is a real row, not the mean)."""
    from blast_ray.graphs.spread import row_spread

    s = row_spread(feat1cls, block_rows=100)
    assert not s.degenerate() and s.n_identical < 0.05 * s.n_rows and s.n_zero == 0
    same = np.repeat(feat1cls[3:4], 500, axis=0) * np.linspace(0.5, 2.0, 500)[:, None]  # scale: same direction
    s = row_spread(same, block_rows=64)
    assert s.degenerate() and s.n_identical == 500 and "all 500 rows identical" in s.describe()
    mixed = np.vstack([same, feat1cls[10:30], np.zeros((7, 512), np.float32)])
    s = row_spread(mixed, block_rows=50)
    assert s.n_zero == 7 and s.n_identical == 500 and s.degenerate()  # 500 of 520 non-zero rows
    assert "500 of 520 non-zero rows identical" in s.describe()
    assert not row_spread(mixed, rows=np.arange(490, 520)).degenerate()  # 10 identical of 30
    assert row_spread(np.zeros((4, 3))).degenerate()  # no direction at all


def _graph_manifest(store_dir, cfg, stages=("etl", "profiles", "features", "graphs")) -> dict:
    from blast_ray.pipeline import run_pipeline

    res = run_pipeline(cfg, stages=stages)
    assert res.ok, res.error
    return res.manifests["graphs"]


def test_baby_template_profiles_fall_back_to_cooccurrence(data_dir, tmp_path, ray_local, caplog):
    """Amazon Baby (no item text in the shared data) with template profiles: every item text and
    every user text vector is the same, so S_I comes from co-occurrence and no user graph is built,
    with the reason in the manifest and the log. (Profiles for the first 2,000 users only, to
    bound the encoder's time; the others get zero vectors, which the user graph leaves out.)"""
    from blast_ray.config import load_config
    from blast_ray.graphs.stage import load_item_knn
    from blast_ray.store import ArtifactStore, StageOutput

    cfg = load_config(str(PROJECT_ROOT / "configs" / "amazon-baby.yaml"),
                      overrides=[f"store={tmp_path / 'store'}", "graphs.distributed=false",
                                 "features.num_cpus_per_actor=1.5", "profiles.sample_users=2000",
                                 "graphs.user_graph=true"])  # the tuned Baby config builds none
    with caplog.at_level("WARNING", logger="blast_ray.graphs"):
        m = _graph_manifest(tmp_path / "store", cfg)
    extra = m["extra"]
    n_items, n_users = extra["shape"]["items"], extra["shape"]["users"]
    assert (n_items, n_users) == (7050, 19445)
    fb = extra["fallbacks"]
    assert fb["item_text"].startswith(f"all {n_items} rows identical") and fb["item_text"].endswith("-> co-occurrence")
    assert fb["user_text"].startswith("all 2000 rows identical") and fb["user_text"].endswith("-> no user graph")
    assert extra["item_modalities"] == ["cooc"] and extra["user_graph"].startswith("skipped: user_text all")
    assert "user_graph" not in m["row_counts"]
    assert any("item_text is uninformative" in r.message for r in caplog.records)
    assert any("user_text is uninformative" in r.message for r in caplog.records)
    # the co-occurrence kNN is not the tie rule's 0..k-1 for every item
    out = StageOutput(ArtifactStore(str(tmp_path / "store")), "amazon-baby", "graphs", m["fingerprint"], {}, {})
    knn = load_item_knn(out, "cooc")
    first = {tuple(knn[i].indices) for i in range(0, n_items, 50)}
    assert len(first) > 100


def test_informative_ml100k_features_do_not_fall_back(data_dir, ml100k_features_copy, tmp_path, ray_local):
    """MovieLens-100k template profiles (titles, years, genres, demographics) differ per item and
    user: both graphs are built from text and no fallback is recorded."""
    from blast_ray.config import load_config
    from jobs.smoke import smoke_config

    cfg = load_config(smoke_config(data_dir, str(ml100k_features_copy), tmp_path / "cfg.yaml",
                                   graphs={"distributed": False, "user_graph": True}))  # the tuned ml-100k config has none
    m = _graph_manifest(ml100k_features_copy, cfg)
    assert "fallbacks" not in m["extra"]
    assert m["extra"]["item_modalities"] == ["text"] and m["extra"]["user_graph"] == "built from user_text"


def test_distributed_graphs_never_load_the_vectors_in_the_driver(data_dir, ml100k_features_copy, tmp_path, ray_local,
                                                                   monkeypatch):
    """graphs.distributed: a Ray task reads each feature from the features shards and builds the
    index, query tasks search it and assembly tasks build and write the graphs; the driver (this
    process, where reading a feature, building or writing a graph now fails) gets neither the
    vectors nor the neighbours nor a graph. The item kNN and both graphs equal the one-process
    stage's exactly (real ml-100k features)."""
    import blast_ray.features.artifacts as fa
    import blast_ray.graphs.stage as gs
    from blast_ray.config import load_config
    from blast_ray.graphs.stage import load_graph, load_item_knn
    from blast_ray.store import ArtifactStore, StageOutput
    from jobs.smoke import smoke_config

    outs = {}
    for distributed in (False, True):
        cfg = load_config(smoke_config(data_dir, str(ml100k_features_copy), tmp_path / f"cfg-{distributed}.yaml",
                                       graphs={"distributed": distributed, "user_graph": True}))
        if distributed:  # profiles/features are committed (fixture); the second run reads them in tasks
            def driver_read(*a, **k):
                raise AssertionError("the driver read a feature's vectors")
            monkeypatch.setattr(fa, "load_vectors", driver_read)
            monkeypatch.setattr(fa, "load_features", driver_read)

            def driver_graph(*a, **k):
                raise AssertionError("the driver built or wrote a graph")
            for name in ("binary_knn", "sym_normalize", "combine_graphs", "knn_edges"):
                monkeypatch.setattr(gs, name, driver_graph)
            for name in ("write_graph", "write_item_knn"):
                monkeypatch.setattr(gs.artifacts, name, driver_graph)
        m = _graph_manifest(ml100k_features_copy, cfg)
        assert m["extra"]["user_graph"] == "built from user_text" and m["extra"]["item_modalities"] == ["text"]
        store = ArtifactStore(str(ml100k_features_copy))
        outs[distributed] = StageOutput(store, "ml-100k", "graphs", m["fingerprint"], {}, {})
    assert outs[False].fingerprint != outs[True].fingerprint
    for load in (lambda o: load_item_knn(o, "text"), lambda o: load_graph(o, "item"), lambda o: load_graph(o, "user")):
        a, b = load(outs[False]), load(outs[True])
        assert (a != b).nnz == 0 and a.nnz > 0


def test_user_graph_from_cooccurrence(data_dir, ml100k_store, tmp_path, ray_local):
    """graphs.user_graph_source=cooc: S_U is the symmetric-normalized binary kNN of the users' train
    rows (cosine over their train items), whatever the user profiles say; built on Ray tasks
    (graphs.distributed) equal to the exact reference; no features needed."""
    from blast_ray.config import load_config
    from blast_ray.etl.artifacts import load_interactions
    from blast_ray.graphs import knn_topk, sym_normalize
    from blast_ray.graphs.stage import binary_knn, load_graph
    from blast_ray.store import ArtifactStore, StageOutput
    from jobs.smoke import smoke_config

    cfg = load_config(smoke_config(data_dir, str(ml100k_store), tmp_path / "cfg.yaml",
                                   graphs={"user_graph": True, "user_graph_source": "cooc", "knn_k": 5,
                                           "block_rows": 256}))
    m = _graph_manifest(ml100k_store, cfg, stages=("etl", "graphs"))
    assert m["extra"]["user_graph"].startswith("built from co-occurrence")
    assert m["extra"]["knn_search"]["user_cooc"]["index"] == "exact-sparse"
    store = ArtifactStore(str(ml100k_store))
    out = StageOutput(store, "ml-100k", "graphs", m["fingerprint"], {}, {})
    s_u = load_graph(out, "user")
    etl = StageOutput(store, "ml-100k", "etl", m["inputs"]["etl"], {}, {})
    train = load_interactions(etl).train
    assert s_u.shape == (train.shape[0],) * 2 and m["row_counts"]["user_graph"] == s_u.nnz
    cols, _ = knn_topk(train.toarray().astype(np.float64), 5)
    ref = sym_normalize(binary_knn(np.arange(train.shape[0]), cols, train.shape[0]))
    # the same lists up to order inside exact ties at the k-th place: compare the supports row by row
    same = [set(s_u[i].indices) == set(ref[i].indices) for i in range(train.shape[0])]
    assert np.mean(same) >= 0.98
    # k neighbours per user, weighted as the trainer reads it (D^-1/2 S D^-1/2, positive)
    assert (s_u.getnnz(axis=1) == 5).all() and s_u.data.min() > 0


def test_recall_floor_fails_the_distributed_stage_in_one_line_and_commits_nothing(data_dir, ml100k_features_copy,
                                                                                   tmp_path, ray_local):
    """An approximate index whose sampled recall@k falls below graphs.recall_floor, built inside the
    Ray task (graphs.distributed), fails the graphs stage with one line naming the setting; no
    graphs output is committed for that config. (Real ml-100k features; IVF with 16 lists probed
    one at a time does not reach recall 0.99.)"""
    from blast_ray.config import load_config
    from blast_ray.pipeline import run_pipeline
    from blast_ray.store import ArtifactStore
    from blast_ray.store.layout import committed_outputs
    from jobs.smoke import smoke_config

    cfg = load_config(smoke_config(data_dir, str(ml100k_features_copy), tmp_path / "cfg.yaml",
                                   graphs={"distributed": True, "exact_max_rows": 100, "index": "ivf", "ivf_nlist": 16,
                                           "ivf_nprobe": 1, "recall_floor": 0.99, "recall_sample": 200}))
    store = ArtifactStore(str(ml100k_features_copy))
    before = {o.fingerprint for o in committed_outputs(store, "ml-100k", "graphs")}
    res = run_pipeline(cfg, stages=("etl", "profiles", "features", "graphs"))
    assert res.failed_stage == "graphs"
    assert "\n" not in res.error.strip() and "below graphs.recall_floor=0.99" in res.error, res.error
    after = {o.fingerprint for o in committed_outputs(store, "ml-100k", "graphs")}
    assert after == before
