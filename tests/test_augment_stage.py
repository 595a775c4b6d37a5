"""The augment stage end to end on real Scientific data, through the S3 store (moto server)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from blast_ray.augment import load_augmentation, run
from blast_ray.config import PipelineConfig
from blast_ray.graphs.knn import knn_graph
from blast_ray.pipeline import StageContext
from blast_ray.store import ArtifactStore, StageOutput
from tests.test_augment import _scientific_slice


def test_stage_writes_contract_outputs(dataset, s3_bucket):
    R, feats = _scientific_slice(dataset("amazon-scientific-2018"), 300)
    M, N = R.shape
    store = ArtifactStore(s3_bucket)
    cfg = PipelineConfig()
    cfg.dataset.name = "scientific-slice"
    cfg.augment.ratio = 0.2
    cfg.augment.tol = 1e-8

    etl = StageOutput.open(store, cfg.dataset.name, "etl", {"t": 1}).begin()
    r, c = R.nonzero()
    store.write_table(pa.Table.from_pandas(pd.DataFrame({
        "user_idx": r.astype(np.int64), "item_idx": c.astype(np.int64), "split": "train"})),
        *etl.parts, "interactions")
    etl.commit(row_counts={"users": M, "items": N, "interactions": len(r)})

    graphs = StageOutput.open(store, cfg.dataset.name, "graphs", {"t": 1}).begin()
    K = knn_graph(feats, 10).tocoo()
    store.write_table(pa.table({"src": K.row.astype(np.int64), "dst": K.col.astype(np.int64),
                                "sim": np.ones(K.nnz, np.float32)}), *graphs.parts, "item_knn_text.parquet")
    graphs.commit(extra={"item_modalities": ["text"], "shape": {"items": N, "users": M}})

    ctx = StageContext(cfg, store, "run1", outputs={"etl": etl, "graphs": graphs})
    out = StageOutput.open(store, cfg.dataset.name, "augment", {"t": 1}).begin()
    result = run(ctx, out)
    out.commit(result["row_counts"], result["timings"], result["extra"])

    aug = load_augmentation(out, M, N)
    q = int(round(0.2 * R.nnz))
    assert len(aug.users) == q == result["row_counts"]["augmented_pairs"]
    assert R[aug.users, aug.items].A1.sum() == 0  # H never contains a train pair
    assert np.all(np.diff(aug.values) <= 0) and (aug.values > 0).all()
    Rb = sp.csr_matrix(R)
    expect_g = (Rb @ sp.csr_matrix(knn_graph(feats, 10))) > 0
    expect_g = sp.csr_matrix(expect_g.astype(np.float64) - expect_g.multiply(Rb))
    expect_g.eliminate_zeros()
    assert (aug.false_negatives != expect_g).nnz == 0
    sk = result["extra"]["sinkhorn"]
    assert sk["converged"] and sk["final_error"] < 1e-8 and sk["iterations"] > 0
    spread = result["extra"]["spread"]
    assert sum(spread["users"]["pairs"]) == q and sum(spread["items"]["pairs"]) == q
