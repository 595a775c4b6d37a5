"""Round trips of the train, evaluate and recommend artifacts (blast_ray/<stage>/artifacts.py) and
of the training checkpoint state, on a real Baby slice."""

import numpy as np
import pandas as pd
import pytest
import torch

from blast_ray.config import TrainConfig
from blast_ray.evaluate import artifacts as eva
from blast_ray.recommend import artifacts as reca
from blast_ray.store import ArtifactStore, StageOutput
from blast_ray.train import EvalPlan, TrainInputs, fit
from blast_ray.train import artifacts as tra
from blast_ray.train.checkpoints import StoreCheckpoints, state_from_bytes, state_to_bytes
from blast_ray.etl.readers import read_lattice_split


@pytest.fixture(scope="module")
def trained(dataset):
    """One real epoch of LightGCN on 800 Baby users: (data, cfg, state)."""
    torch.set_num_threads(1)
    data = read_lattice_split(dataset("amazon-baby-5core"), max_users=800)
    cfg = TrainConfig(model="lightgcn", epochs=1, lr=0.01, seed=2)
    return data, cfg, fit(cfg, TrainInputs(data), EvalPlan(ks=(10, 20)))


def _out(tmp_path, stage):
    return StageOutput.open(ArtifactStore(str(tmp_path)), "baby", stage, {"s": stage}).begin()


def test_train_artifacts_round_trip(trained, tmp_path):
    data, cfg, state = trained
    out = _out(tmp_path, "train")
    tra.write_model(out, state.model, state.config, data.n_users, data.n_items)
    saved = tra.load_model(out)
    assert saved["n_users"] == data.n_users and saved["n_items"] == data.n_items and saved["config"]["model"] == "lightgcn"
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in state.model.items())
    assert tra.load_model_uri(out.uri())["n_items"] == data.n_items
    users = np.random.default_rng(0).standard_normal((data.n_users, 8)).astype(np.float32)
    items = np.random.default_rng(1).standard_normal((data.n_items, 8)).astype(np.float32)
    tra.write_embeddings(out, users, items)
    u2, i2 = tra.load_embeddings(out)
    assert u2.dtype == np.float32 and np.array_equal(u2, users) and np.array_equal(i2, items)
    tra.write_history(out, state.history)
    hist = tra.load_history(out)
    assert tra.has_history(out) and list(hist.columns[: len(tra.HISTORY_SCHEMA)]) == tra.HISTORY_SCHEMA.names
    assert hist["valid.recall@20"].iloc[0] == pytest.approx(state.history[0]["valid.recall@20"])
    metrics = {"valid.recall@20": 0.1, "test.recall@20": 0.2, "best_epoch": 0}
    tra.write_metrics(out, metrics)
    assert tra.load_metrics(out) == metrics
    with pytest.raises(FileNotFoundError, match=tra.MODEL_FILE):
        tra.load_model(_out(tmp_path / "empty", "train"))
    # other committed train outputs on the same ETL input
    out.inputs["etl"] = "etl-fp"
    out.commit(extra={"model": "lightgcn"})
    found = tra.committed_train_manifests(out.store, "baby", "etl-fp")
    assert [m["fingerprint"] for m in found] == [out.fingerprint]
    assert tra.committed_train_manifests(out.store, "baby", "other") == []


def test_checkpoint_state_round_trip(trained, tmp_path):
    data, cfg, state = trained
    back = state_from_bytes(state_to_bytes(state))  # weights-only load: no unpickling
    assert back.epoch == state.epoch and back.best == state.best and back.history == state.history
    assert back.select_metric == "recall@20" and back.config == state.config
    assert all(torch.equal(back.best_state[k], v) for k, v in state.best_state.items())
    assert torch.equal(back.torch_rng, state.torch_rng)
    store = ArtifactStore(str(tmp_path))
    parts = tra.checkpoint_parts("baby", "fp")
    ck = StoreCheckpoints(store, *parts)
    assert ck.load_latest() is None
    ck.save(state)
    assert ck.load_latest().epoch == state.epoch
    assert store.list_files(*parts) and tra.checkpoint_file(state.epoch) in store.list_dir(*parts)


def test_evaluate_and_recommend_artifacts_round_trip(trained, tmp_path):
    data, _, _ = trained
    out = _out(tmp_path, "evaluate")
    rows = eva.metric_rows(valid={"recall@20": 0.1, "n_users": 700}, test={"recall@20": 0.2, "n_users": 690})
    eva.write_metrics(out, rows)
    assert eva.load_metrics(out) == rows
    assert not eva.has_baselines(out) and eva.load_baselines(out) == {}
    base = {"pop": {"valid.recall@20": 0.01, "test.recall@20": 0.02}, "bpr": {"valid.ndcg@10": 0.03}}
    eva.write_baselines(out, base)
    assert eva.load_baselines(out) == base
    assert out.store.read_table(*out.parts, eva.BASELINES_FILE).schema.equals(eva.BASELINES_SCHEMA)

    rec = _out(tmp_path, "recommend")
    users = np.arange(5, dtype=np.int64)
    top = np.arange(15, dtype=np.int64).reshape(5, 3)
    scores = -np.arange(15, dtype=np.float32).reshape(5, 3)
    user_ids = np.array([f"u{i}" for i in range(5)], dtype=object)
    item_ids = np.array([f"i{i}" for i in range(15)], dtype=object)
    titles = np.array([None if i % 4 == 0 else f"title {i}" for i in range(15)], dtype=object)
    frame = reca.recommendation_frame(users, top, scores, user_ids, item_ids, titles)
    import pyarrow as pa

    rec.store.write_table(pa.Table.from_pandas(frame, preserve_index=False, schema=reca.RECOMMENDATIONS_SCHEMA),
                          *rec.parts, reca.RECOMMENDATIONS_DIR, "part-0.parquet")
    back = reca.load_recommendations(rec)
    pd.testing.assert_frame_equal(back, frame)
    assert back["rank"].tolist() == [1, 2, 3] * 5
    one = reca.load_recommendations(rec, user_idx=3)
    assert one["user_idx"].tolist() == [3, 3, 3] and one["item_idx"].tolist() == [9, 10, 11]
    assert one["item_id"].tolist() == ["i9", "i10", "i11"] and one["title"].tolist() == ["title 9", "title 10", "title 11"]
    by_raw = reca.load_recommendations(rec, user_id="u3", columns=["rank", "item_id", "title"])
    assert list(by_raw.columns) == ["rank", "item_id", "title"] and by_raw["item_id"].tolist() == ["i9", "i10", "i11"]
    assert back.loc[back.item_idx == 0, "title"].isna().all()  # no title: null, never invented
    assert reca.sample_user_ids(rec, 2) == ["u0", "u1"]
