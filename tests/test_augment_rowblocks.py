"""The augment stage distributed by row blocks (issue 11 item 5), on the whole real Scientific train split.

Reference: today's single-process path (G = false_negative_candidates on the whole R, sparse_sinkhorn,
top_q_cells). The stage must select exactly the same H whatever the row blocking.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp

from blast_ray.augment import false_negative_candidates, load_augmentation, marginals, run, sparse_sinkhorn, top_q_cells
from blast_ray.augment.rowblocks import BYTES_PER_CELL, GIB, fixed_task_bytes, plan_row_blocks, row_cells
from blast_ray.config import PipelineConfig
from blast_ray.graphs.knn import knn_graph
from blast_ray.pipeline import StageContext
from blast_ray.store import ArtifactStore, StageOutput
from tests.test_augment import _scientific_slice


@pytest.fixture(scope="module")
def sci_store(dataset, tmp_path_factory):
    """All Scientific users (train split) as a committed ETL output + a text item kNN graphs output."""
    R, feats = _scientific_slice(dataset("amazon-scientific-2018"), 10**9)
    M, N = R.shape
    store = ArtifactStore(tmp_path_factory.mktemp("aug-blocks"))
    etl = StageOutput.open(store, "scientific", "etl", {"t": 1}).begin()
    r, c = R.nonzero()
    # two part files and a few non-train rows: the blocks must read only their users' train rows
    df = pd.DataFrame({"user_idx": r.astype(np.int64), "item_idx": c.astype(np.int64), "split": "train"})
    half = len(df) // 2
    extra = pd.DataFrame({"user_idx": [0, 1], "item_idx": [int(c[-1]), int(c[-2])], "split": ["valid", "test"]})
    for k, part in enumerate((df[:half], pd.concat([df[half:], extra]))):
        store.write_table(pa.Table.from_pandas(part, preserve_index=False), *etl.parts, "interactions", f"part-{k}.parquet")
    etl.commit(row_counts={"users": M, "items": N, "interactions": len(df) + 2})
    graphs = StageOutput.open(store, "scientific", "graphs", {"t": 1}).begin()
    K = knn_graph(feats, 10).tocoo()
    sims = np.round(np.random.default_rng(0).random(K.nnz), 1).astype(np.float32)  # ties for knn_k cut
    store.write_table(pa.table({"src": K.row.astype(np.int64), "dst": K.col.astype(np.int64), "sim": sims}),
                      *graphs.parts, "item_knn_text.parquet")
    graphs.commit(extra={"item_modalities": ["text"], "shape": {"items": N, "users": M}})
    return store, etl, graphs, R, K.tocsr(), sims


def _cfg(**augment) -> PipelineConfig:
    cfg = PipelineConfig()
    cfg.dataset.name = "scientific"
    cfg.augment.ratio = 0.1
    cfg.augment.tol = 1e-8
    cfg.augment.knn_k = 8
    for k, v in augment.items():
        setattr(cfg.augment, k, v)
    return cfg


def _run(sci_store, tag, **augment):
    store, etl, graphs, R, _, _ = sci_store
    cfg = _cfg(**augment)
    ctx = StageContext(cfg, store, "run1", outputs={"etl": etl, "graphs": graphs})
    out = StageOutput.open(store, "scientific", "augment", {"t": tag}).begin()
    result = run(ctx, out)
    out.commit(result["row_counts"], result["timings"], result["extra"])
    return load_augmentation(out, *R.shape), result


@pytest.fixture(scope="module")
def reference(sci_store):
    """Today's single-process result on the whole R."""
    store, etl, graphs, R, _, _ = sci_store
    from blast_ray.augment.stage import _item_knn

    cfg = _cfg()
    G = false_negative_candidates(R, [_item_knn(graphs, "text", cfg.augment.knn_k, R.shape[1])])
    a, b = marginals(R, cfg.augment.row_target, cfg.augment.col_target)
    res = sparse_sinkhorn(R, G, eps=cfg.augment.eps, a=a, b=b, tol=cfg.augment.tol, max_iter=cfg.augment.max_iter)
    q = int(round(cfg.augment.ratio * R.nnz))
    u, i, v = top_q_cells(res.f, res.g, cfg.augment.eps, R, G, q)
    return u, i, np.exp(v), G, q


def _pairs(u, i):
    return set(zip(u.tolist(), i.tolist()))


def test_one_block_in_process_equals_single_process_path(sci_store, reference):
    u, i, v, G, q = reference
    aug, result = _run(sci_store, "one", num_blocks=1)
    assert len(aug.users) == q
    np.testing.assert_array_equal(aug.users, u)
    np.testing.assert_array_equal(aug.items, i)
    np.testing.assert_array_equal(aug.values, v)
    assert (aug.false_negatives != G).nnz == 0
    blocks = result["extra"]["blocks"]
    assert blocks["num_blocks"] == 1 and blocks["in_process"] and blocks["peak_cells_per_block"] == G.nnz + sci_store[3].nnz
    assert result["extra"]["h_in_g"] == int((G[u, i].A1 != 0).sum())


def test_ray_row_blocks_select_the_same_h(sci_store, reference, ray_local):
    u, i, v, G, q = reference
    aug, result = _run(sci_store, "three", num_blocks=3)
    assert result["extra"]["blocks"]["num_blocks"] == 3 and not result["extra"]["blocks"]["in_process"]
    assert _pairs(aug.users, aug.items) == _pairs(u, i)
    np.testing.assert_array_equal(aug.users, u)  # same order (tie rule) too
    np.testing.assert_allclose(aug.values, v, rtol=1e-9)
    assert (aug.false_negatives != G).nnz == 0
    assert result["row_counts"]["false_negatives"] == G.nnz


def test_auto_follows_the_memory_budget(sci_store, reference, ray_local):
    u, i, v, G, q = reference
    R, N = sci_store[3], sci_store[3].shape[1]
    cells = row_cells(np.diff(R.indptr), 8, N)
    # a budget for about a quarter of the planned cells plus the fixed part
    budget = (fixed_task_bytes(N, 8) + int(cells.sum()) // 4 * BYTES_PER_CELL) / GIB
    aug, result = _run(sci_store, "auto", num_blocks="auto", task_memory_gib=budget)
    blocks = result["extra"]["blocks"]
    assert 4 <= blocks["num_blocks"] <= 6, blocks
    assert blocks["planned_peak_cells_per_block"] * BYTES_PER_CELL + fixed_task_bytes(N, 8) <= budget * GIB
    assert blocks["peak_cells_per_block"] <= blocks["planned_peak_cells_per_block"]
    assert blocks["rows_per_block_max"] < R.shape[0]
    assert _pairs(aug.users, aug.items) == _pairs(u, i)
    assert (aug.false_negatives != G).nnz == 0


def test_budget_too_small_for_one_block_fails_with_the_setting(sci_store):
    with pytest.raises(ValueError, match=r"augment.task_memory_gib=0.0001 is too small for one row block.*GiB"):
        _run(sci_store, "small", num_blocks="auto", task_memory_gib=0.0001)


def test_plan_row_blocks_covers_rows_in_order():
    cells = np.array([5, 1, 7, 3, 3, 9, 2])
    for setting in (1, 2, 3, 7, 20):
        plan = plan_row_blocks(cells, setting, 1.0, 0)
        flat = [r for s, e in plan.bounds for r in range(s, e)]
        assert flat == list(range(7)) and plan.num_blocks == min(setting, 7)
        assert sum(plan.cells) == cells.sum()
    plan = plan_row_blocks(cells, "auto", 10 * BYTES_PER_CELL / GIB, 0)
    assert [c <= 10 for c in plan.cells] == [True] * plan.num_blocks and plan.bounds[0] == (0, 2)


def test_per_user_marginals_through_ray_blocks_equal_the_single_process_path(sci_store, ray_local):
    """row_target=activity / col_target=popularity: each block gets its own users' a (not one
    constant); the H of 3 Ray blocks equals the single-process H for the same marginals."""
    store, etl, graphs, R, _, _ = sci_store
    from blast_ray.augment.stage import _item_knn

    cfg = _cfg(row_target="activity", col_target="popularity")
    G = false_negative_candidates(R, [_item_knn(graphs, "text", cfg.augment.knn_k, R.shape[1])])
    a, b = marginals(R, "activity", "popularity")
    assert len(np.unique(a)) > 1  # really per user
    res = sparse_sinkhorn(R, G, eps=cfg.augment.eps, a=a, b=b, tol=cfg.augment.tol, max_iter=cfg.augment.max_iter)
    q = int(round(cfg.augment.ratio * R.nnz))
    u, i, v = top_q_cells(res.f, res.g, cfg.augment.eps, R, G, q)
    aug, _ = _run(sci_store, "own-degree", num_blocks=3, row_target="activity", col_target="popularity")
    np.testing.assert_array_equal(aug.users, u)
    np.testing.assert_array_equal(aug.items, i)
    np.testing.assert_allclose(aug.values, np.exp(v), rtol=1e-9)
