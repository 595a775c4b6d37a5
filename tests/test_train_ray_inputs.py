"""Ray Train workers read their inputs from the store (issue 12 item 2), and one worker can run on
Ray Train with the same checkpoints and resume (``train.ray_train_single_worker``).

Upstream outputs are committed into a temporary store from a real Amazon Baby slice (1,500
users): the ETL interactions, item/user text-like features (an SVD of the real R), the kNN item
and user graphs over them, and augmented pairs H from the real Sinkhorn + top-q cores over R and
its false-negative candidates G, so BLAST reads every kind of input."""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from blast_ray.config import TrainConfig
from blast_ray.etl.readers import read_lattice_split
from blast_ray.store import ArtifactStore, StageOutput
from blast_ray.train.loop import EvalPlan

N_USERS = 1500
PLAN = EvalPlan(ks=(20,), batch_users=1024)


@pytest.fixture(scope="module")
def baby_small(dataset):
    return read_lattice_split(dataset("amazon-baby-5core"), max_users=N_USERS)


def _commit(store, stage: str, write, extra=None, row_counts=None) -> StageOutput:
    out = StageOutput.open(store, "baby", stage, {"test": stage}).begin()
    write(out)
    out.commit(row_counts=row_counts, extra=extra)
    return out


@pytest.fixture(scope="module")
def upstream(baby_small, tmp_path_factory):
    """(store, stage -> committed StageOutput) for etl, features, graphs and augment."""
    from scipy.sparse.linalg import svds

    from blast_ray.augment.artifacts import write_augmentation
    from blast_ray.augment.false_negatives import false_negative_candidates
    from blast_ray.augment.sinkhorn import sparse_sinkhorn
    from blast_ray.augment.topq import top_q_cells
    from blast_ray.features.artifacts import write_vectors
    from blast_ray.graphs.artifacts import write_graph
    from blast_ray.graphs.knn import knn_graph, sym_normalize

    data = baby_small
    store = ArtifactStore(str(tmp_path_factory.mktemp("store")))

    def etl(out):
        frames = []
        for split in ("train", "valid", "test"):
            c = getattr(data, split).tocoo()
            frames.append(pd.DataFrame({"user_idx": c.row.astype(np.int64), "item_idx": c.col.astype(np.int64),
                                        "split": split}))
        store.write_table(pa.Table.from_pandas(pd.concat(frames), preserve_index=False), *out.parts, "interactions",
                          "part-0.parquet")

    outputs = {"etl": _commit(store, "etl", etl, row_counts={"users": data.n_users, "items": data.n_items})}
    R = data.train.tocsr()
    u, s, _ = svds(R.T.astype(np.float64).tocsr(), k=16)
    item_x = (u * s).astype(np.float32)
    user_x = np.asarray(R @ item_x, dtype=np.float32)

    def features(out):
        write_vectors(out, "item_text", np.arange(data.n_items), item_x)
        write_vectors(out, "user_text", np.arange(data.n_users), user_x)

    outputs["features"] = _commit(store, "features", features, extra={
        "modalities": ["item_text", "user_text"], "n_items": data.n_items, "n_users": data.n_users})
    s_item = knn_graph(item_x, 10)

    def graphs(out):
        write_graph(out, "item", sym_normalize(s_item).astype(np.float32))
        write_graph(out, "user", sym_normalize(knn_graph(user_x, 10)).astype(np.float32))

    outputs["graphs"] = _commit(store, "graphs", graphs, extra={"shape": {"items": data.n_items, "users": data.n_users}})
    G = false_negative_candidates(R, [s_item])
    ot = sparse_sinkhorn(R, G, eps=0.1, tol=1e-6, max_iter=500)
    hu, hi, hv = top_q_cells(ot.f, ot.g, 0.1, R, G, int(0.1 * R.nnz))
    outputs["augment"] = _commit(store, "augment", lambda out: write_augmentation(out, hu, hi, hv, G))
    return store, outputs


def _source_and_inputs(store, outputs):
    from blast_ray.etl.artifacts import load_interactions
    from blast_ray.train.source import AugmentUse, StoreInputs, side_inputs

    use = AugmentUse(enabled=True, add_to_graph=True, restrict_negatives=True)
    source = StoreInputs.from_outputs(store, "baby", outputs, use)
    return source, side_inputs(outputs, load_interactions(outputs["etl"]), use)


def test_store_inputs_load_what_the_driver_builds_and_the_config_stays_small(upstream):
    """A worker's StoreInputs.load() builds the driver's TrainInputs exactly; the trainer config
    then carries a few hundred bytes instead of the arrays; a deleted output is one clear error."""
    from blast_ray.train.ray_trainer import loop_config

    store, outputs = upstream
    source, inputs = _source_and_inputs(store, outputs)
    loaded = pickle.loads(pickle.dumps(source)).load()  # what a worker does with its config entry
    assert loaded.has_extra() and loaded.extra_in_graph and loaded.neg_exclude is not None
    assert set(loaded.features) == {"item_text", "user_text"}
    for name, x in inputs.features.items():
        assert np.array_equal(loaded.features[name], x)
    for m in ("item_graph", "user_graph", "neg_exclude"):
        a, b = getattr(inputs, m), getattr(loaded, m)
        assert a.shape == b.shape and (a != b).nnz == 0, m
    assert (loaded.data.train != inputs.data.train).nnz == 0 and (loaded.data.valid != inputs.data.valid).nnz == 0
    assert np.array_equal(loaded.extra_users, inputs.extra_users) and np.array_equal(loaded.extra_items, inputs.extra_items)

    cfg = TrainConfig(model="blast", num_workers=2)
    by_ref = len(pickle.dumps(loop_config(cfg, inputs, PLAN, source=source)))
    shipped = len(pickle.dumps(loop_config(cfg, inputs, PLAN, source=None)))
    print(f"train_loop_config pickled: {by_ref:,} B with the store reference, {shipped:,} B with the inputs")
    assert loop_config(cfg, inputs, PLAN, source=source)["inputs"] is None
    assert by_ref < 8_000 and shipped > 100 * by_ref, (by_ref, shipped)

    gone = StageOutput(store, "baby", "graphs", "0" * 16, None, {})
    bad = type(source)(source.store_root, "baby", (("etl", outputs["etl"].fingerprint), ("graphs", gone.fingerprint)))
    with pytest.raises(FileNotFoundError, match=r"training input graphs output 0+ .* is not committed"):
        bad.load()


def test_two_workers_from_the_store_match_shipped_inputs(upstream, tmp_path, ray_local):
    """2 Ray Train workers reading BLAST's inputs from the store train exactly as 2 workers that
    receive the same inputs pickled through the config (same seed: the same history)."""
    from blast_ray.train.ray_trainer import fit_ray

    store, outputs = upstream
    source, inputs = _source_and_inputs(store, outputs)
    cfg = TrainConfig(model="blast", epochs=2, lr=0.01, seed=11, num_workers=2, prune_ratio=0.5)
    ck = ArtifactStore(str(tmp_path))
    kw = dict(storage_path=ck.path("baby", "checkpoints"), storage_filesystem=ck.fs, plan=PLAN)
    shipped = fit_ray(cfg, inputs, name="shipped", **kw)
    from_store = fit_ray(cfg, inputs, name="from-store", source=source, **kw)
    assert [r["epoch"] for r in from_store.history] == [0, 1]
    for a, b in zip(shipped.history, from_store.history):
        assert a["triples"] == b["triples"] and a["steps"] == b["steps"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["valid.recall@20"] == pytest.approx(a["valid.recall@20"], rel=1e-5, abs=1e-7)
    assert from_store.history[-1]["valid.recall@20"] > 0


def test_one_worker_on_ray_train_matches_plain_and_resumes(baby_small, tmp_path, ray_local):
    """train.ray_train_single_worker: fit() runs one worker through TorchTrainer (Ray Train's
    checkpoints, none of the plain process's); its validation history equals the plain run's for
    the same seed, and a re-submitted run resumes from its checkpoint."""
    from blast_ray.train import TrainInputs, fit
    from blast_ray.train import artifacts
    from blast_ray.train.fit import uses_ray_train
    from blast_ray.train.ray_trainer import fit_ray

    inputs = TrainInputs(baby_small)
    base = dict(model="lightgcn", epochs=3, lr=0.01, seed=7)
    t0 = time.perf_counter()
    plain = fit(TrainConfig(**base), inputs, PLAN)
    t_plain = time.perf_counter() - t0
    cfg = TrainConfig(**base, ray_train_single_worker=True)
    assert uses_ray_train(cfg) and not uses_ray_train(TrainConfig(**base))
    with pytest.raises(ValueError, match="train.ray_train_single_worker needs a store"):
        fit(cfg, inputs, PLAN)
    store = ArtifactStore(str(tmp_path))
    parts = artifacts.checkpoint_parts("baby", "f" * 16)
    t0 = time.perf_counter()
    first = fit(cfg, inputs, PLAN, store=store, checkpoint_parts=parts, max_epochs=2)  # an interrupted run
    t_ray = time.perf_counter() - t0
    print(f"3 epochs plain {t_plain:.1f}s; 2 epochs through Ray Train (1 worker) {t_ray:.1f}s")
    assert first.epoch == 2
    assert not store.exists(*parts, artifacts.SINGLE_PROCESS_DIR)  # the plain process's checkpoints: none
    assert any(n.startswith("checkpoint") for n in os.listdir(store.path(*parts)))  # Ray Train's
    resumed, result = fit_ray(cfg, inputs, storage_path=store.path(*parts[:-1]), name=parts[-1],
                              storage_filesystem=store.fs, plan=PLAN, return_result=True)
    assert result.error is None and result.return_value["resumed_from_epoch"] == 2, result.return_value
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
    for a, b in zip(plain.history, resumed.history):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["valid.recall@20"] == pytest.approx(a["valid.recall@20"], rel=1e-4, abs=1e-6)
    assert resumed.best_epoch == plain.best_epoch and resumed.best == pytest.approx(plain.best, rel=1e-4)


def test_ray_train_single_worker_is_not_fingerprinted():
    """Running one worker through Ray Train changes how training runs, not what it writes."""
    from pathlib import Path

    from blast_ray.config import load_config
    from blast_ray.pipeline import STAGE_SPECS, stage_config

    ml = Path(__file__).parent.parent / "configs" / "ml-100k.yaml"
    spec = STAGE_SPECS["train"]
    assert load_config(ml, overrides=["train.ray_train_single_worker=true"]).train.ray_train_single_worker
    assert stage_config(load_config(ml, overrides=["train.ray_train_single_worker=true"]), spec) == \
        stage_config(load_config(ml), spec)


def test_evaluate_baselines_source_is_the_etl_output_only(upstream, baby_small, monkeypatch):
    """The evaluate stage's baselines reach their Ray Train workers the way the main model's inputs
    do: a StoreInputs naming only the committed etl output (ID-only, no augmentation), whose load()
    is exactly the ID-only inputs the driver trains on; run_baseline hands it to fit."""
    import blast_ray.train as train_pkg
    from blast_ray.evaluate.stage import run_baseline
    from blast_ray.train.source import AugmentUse, StoreInputs

    store, outputs = upstream
    source = StoreInputs.from_outputs(store, "baby", {"etl": outputs["etl"]}, AugmentUse())
    assert [s for s, _ in source.outputs] == ["etl"]
    loaded = pickle.loads(pickle.dumps(source)).load()
    assert loaded.features == {} and loaded.item_graph is None and loaded.user_graph is None
    assert not loaded.has_extra() and loaded.neg_exclude is None
    for split in ("train", "valid", "test"):
        assert (getattr(loaded.data, split) != getattr(baby_small, split)).nnz == 0, split
    seen = {}
    real_fit = train_pkg.fit

    def spy(cfg, inputs, plan, **kw):
        seen.update(kw)
        return real_fit(cfg, inputs, plan)

    monkeypatch.setattr(train_pkg, "fit", spy)
    cfg = TrainConfig(model="blast", epochs=1, seed=3, progress=False)
    res = run_baseline("bpr", cfg, baby_small, (20,), 1024, source=source)
    assert seen["source"] is source and res["metrics"]["valid.recall@20"] > 0


def test_a_model_loads_only_the_side_inputs_it_reads(upstream):
    """StoreInputs / side_inputs with a model: freedom's workers read the item vectors and S_I
    (equal to the full load) but never the user vectors or S_U; lightgcn reads no feature or graph;
    blast reads everything. (What the evaluate stage's freedom baseline and train.model use.)"""
    from blast_ray.etl.artifacts import load_interactions
    from blast_ray.train.source import AugmentUse, StoreInputs, side_inputs

    store, outputs = upstream
    full = side_inputs(outputs, load_interactions(outputs["etl"]), AugmentUse())
    freedom = pickle.loads(pickle.dumps(StoreInputs.from_outputs(store, "baby", outputs, AugmentUse(), "freedom"))).load()
    assert set(freedom.features) == {"item_text"} and freedom.user_graph is None
    assert np.array_equal(freedom.features["item_text"], full.features["item_text"])
    assert (freedom.item_graph != full.item_graph).nnz == 0 and full.user_graph is not None
    lightgcn = side_inputs(outputs, load_interactions(outputs["etl"]), AugmentUse(), "lightgcn")
    assert lightgcn.features == {} and lightgcn.item_graph is None and lightgcn.user_graph is None
    blast = side_inputs(outputs, load_interactions(outputs["etl"]), AugmentUse(), "blast")
    assert set(blast.features) == set(full.features) and blast.user_graph is not None
