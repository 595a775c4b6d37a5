"""FAISS kNN core (blast_ray.graphs.ann) against the brute-force reference on real features."""

from __future__ import annotations

import numpy as np
import pytest

from blast_ray.graphs.ann import AnnError, AnnParams, knn_ann, plan_blocks
from blast_ray.graphs.knn import knn_topk


@pytest.fixture(scope="module")
def sci_features(dataset):
    x = np.fromfile(dataset("amazon-scientific-2018") / "Scientific.feat1CLS", dtype=np.float32)
    return x.reshape(-1, 512)


def _recall(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(p) & set(q)) / len(q) for p, q in zip(a, b)]))


@pytest.mark.parametrize("include_self", [True, False])
def test_flat_index_matches_brute_force(sci_features, include_self):
    ref_cols, ref_sims = knn_topk(sci_features, 10, include_self=include_self)
    cols, sims, info = knn_ann(sci_features, 10, include_self=include_self, params=AnnParams(index="flat"))
    assert info["index"] == "flat" and "recall_at_k" not in info
    assert _recall(cols, ref_cols) == 1.0
    assert (cols == ref_cols).all(axis=1).mean() >= 0.99  # order may differ only inside float32 near-ties
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    if not include_self:
        assert not (cols == np.arange(len(cols))[:, None]).any()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_reach_the_recall_goal(sci_features, kind):
    ref_cols, _ = knn_topk(sci_features, 10, include_self=False)
    cols, _, info = knn_ann(sci_features, 10, include_self=False, params=AnnParams(index=kind, ivf_nlist=40),
                            recall_sample=500, recall_floor=0.95)
    assert info["index"] == kind and info["recall_at_k"] >= 0.95
    assert _recall(cols, ref_cols) >= 0.95
    # the sampled figure in the manifest tells the truth about the whole graph
    assert abs(info["recall_at_k"] - _recall(cols, ref_cols)) < 0.05


def test_ties_go_to_the_lowest_index():
    rng = np.random.default_rng(0)
    x = np.vstack([np.tile([1.0, 2.0, 3.0, 0.0], (30, 1)), rng.normal(size=(20, 4))])
    cols, _, _ = knn_ann(x, 5, include_self=False, params=AnnParams(index="flat"))
    assert cols[0].tolist() == [1, 2, 3, 4, 5]
    assert cols[29].tolist() == [0, 1, 2, 3, 4]
    ref, _ = knn_topk(x, 5, include_self=False)
    assert (cols[:30] == ref[:30]).all()


def test_auto_switches_to_hnsw_above_the_threshold(sci_features):
    _, _, info = knn_ann(sci_features, 5, params=AnnParams(exact_max_rows=1000), recall_sample=200)
    assert info["index"] == "hnsw" and 0.0 < info["recall_at_k"] <= 1.0


def test_budget_and_recall_floor_fail_with_the_setting_named(sci_features):
    with pytest.raises(AnnError, match=r"graphs.task_memory_gib=0.001 .* raise it to >= "):
        knn_ann(sci_features, 10, task_memory_gib=0.001)
    with pytest.raises(AnnError, match=r"below graphs.recall_floor=1.01"):
        knn_ann(sci_features, 10, params=AnnParams(index="hnsw"), recall_floor=1.01, recall_sample=100)
    with pytest.raises(AnnError, match="graphs.index"):
        AnnParams(index="lsh")
    # the block follows the budget: twice the budget, a bigger block (until it covers every row)
    small = plan_blocks(1_000_000, 384, 10, AnnParams(index="flat"), 2.0)
    big = plan_blocks(1_000_000, 384, 10, AnnParams(index="flat"), 4.0)
    assert 256 <= small < big


def test_ray_sharded_search_equals_one_process(sci_features):
    from blast_ray.graphs.distributed import knn_ann_ray

    params = AnnParams(index="hnsw")
    one_cols, one_sims, one = knn_ann(sci_features, 10, include_self=False, params=params, recall_sample=300)
    cols, sims, info = knn_ann_ray(sci_features, 10, include_self=False, params=params, recall_sample=300,
                                   num_blocks=3, num_cpus=0.5)
    assert info["tasks"] == 3 and info["recall_at_k"] == one["recall_at_k"]
    np.testing.assert_array_equal(cols, one_cols)
    np.testing.assert_allclose(sims, one_sims)
    # each query task declares the budget as Ray's memory resource, capped at the cluster's: a
    # budget larger than the node still runs (uncapped, the tasks would never be scheduled)
    big = 4 * ray_local_memory_gib()
    cols_big, _, info_big = knn_ann_ray(sci_features, 10, include_self=False, params=params, recall_sample=300,
                                        num_blocks=2, num_cpus=0.5, task_memory_gib=big)
    assert info_big["tasks"] == 2
    np.testing.assert_array_equal(cols_big, one_cols)


def ray_local_memory_gib() -> float:
    from blast_ray.runtime import ensure_ray

    return ensure_ray().cluster_resources()["memory"] / 2**30


def test_index_built_on_two_threads_in_a_task_keeps_the_recall(sci_features):
    """graphs.index_build_cpus: the task that loads the rows and builds the HNSW index gets 2 CPUs
    and 2 FAISS threads (not bit-reproducible, so compared by recall): same rows, k neighbours
    each, sampled recall@10 at the goal; the flat index is exact whatever the threads."""
    from blast_ray.graphs.distributed import knn_ann_ray_loaded

    x = np.ascontiguousarray(sci_features, dtype=np.float32)
    about, cols, sims, info = knn_ann_ray_loaded(lambda: (x.copy(), "rows"), 10, include_self=False,
                                                 params=AnnParams(index="hnsw"), recall_sample=300, num_cpus=0.5,
                                                 build_cpus=2)
    assert about == "rows" and cols.shape == (len(x), 10) and (cols >= 0).all()
    assert info["recall_at_k"] >= 0.95
    flat_cols, _, _ = knn_ann(sci_features, 10, include_self=False, params=AnnParams(index="flat"))
    _, cols2, _, _ = knn_ann_ray_loaded(lambda: (x.copy(), None), 10, include_self=False,
                                        params=AnnParams(index="flat"), num_cpus=0.5, build_cpus=2)
    np.testing.assert_array_equal(cols2, flat_cols)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_chunked_index_read_equals_faiss_deserialize(sci_features, kind):
    """The query tasks read the index through ``read_index_chunked`` (no whole-blob copy): the same
    index as ``faiss.deserialize_index``, for every kind, with chunks that split its records (a
    prime size) and from a read-only array, as the object store hands it over."""
    import faiss

    from blast_ray.graphs.ann import prepare_search
    from blast_ray.graphs.distributed import read_index_chunked, with_direct_map

    p = prepare_search(sci_features, 10, False, AnnParams(index=kind, ivf_nlist=40), 2.0, 0, 0.0, 0)
    blob = faiss.serialize_index(with_direct_map(faiss, p.index))
    blob.setflags(write=False)
    mine, theirs = read_index_chunked(faiss, blob, chunk_bytes=4099), faiss.deserialize_index(blob)
    assert mine.ntotal == theirs.ntotal == len(sci_features) and type(mine) is type(theirs)
    np.testing.assert_array_equal(faiss.serialize_index(mine), blob)
    q = np.ascontiguousarray(sci_features[:50], dtype=np.float32)
    faiss.normalize_L2(q)
    np.testing.assert_array_equal(mine.search(q, 10)[1], theirs.search(q, 10)[1])
    np.testing.assert_array_equal(mine.reconstruct_n(0, 50), theirs.reconstruct_n(0, 50))
