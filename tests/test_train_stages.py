"""train -> evaluate -> recommend stages on a real Baby slice (ETL output written from the
published split), warm start (and its fallback on a shape mismatch). The 2-worker Ray Train run
with a worker SIGKILLed from outside is in tests/faults/test_train_worker_kill.py."""

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from blast_ray.config import PipelineConfig, TrainConfig
from blast_ray.pipeline import StageContext
from blast_ray.store import ArtifactStore, StageOutput
from blast_ray.etl.readers import read_lattice_split

N_USERS = 1500


@pytest.fixture(scope="module")
def baby_small(dataset):
    return read_lattice_split(dataset("amazon-baby-5core"), max_users=N_USERS)


def _etl_output(store, data) -> StageOutput:
    out = StageOutput.open(store, "baby", "etl", {"test": 1}).begin()
    frames = []
    for split in ("train", "valid", "test"):
        c = getattr(data, split).tocoo()
        frames.append(pd.DataFrame({"user_idx": c.row.astype(np.int64), "item_idx": c.col.astype(np.int64), "split": split}))
    store.write_table(pa.Table.from_pandas(pd.concat(frames), preserve_index=False), *out.parts, "interactions", "part-0.parquet")
    out.commit(row_counts={"users": data.n_users, "items": data.n_items, "interactions": sum(len(f) for f in frames)})
    return out


def test_progress_setting():
    """train.progress: true/false/auto (strings from YAML or --set too); auto follows the TTY."""
    import io

    from blast_ray.config import ConfigError
    from blast_ray.train.loop import progress_enabled

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for raw, want in (("true", True), ("False", False), ("auto", "auto"), (True, True)):
        c = TrainConfig(progress=raw)
        c.validate()
        assert c.progress == want
    for bad in ("sometimes", 1, None):
        with pytest.raises(ConfigError, match="train.progress"):
            TrainConfig(progress=bad).validate()
    assert progress_enabled("auto", Tty()) and not progress_enabled("auto", io.StringIO())
    assert progress_enabled(True, io.StringIO()) and not progress_enabled(False, Tty())


def test_stages_train_evaluate_recommend(baby_small, tmp_path, ray_local, caplog, capsys):
    from blast_ray.evaluate.stage import run as evaluate_run
    from blast_ray.recommend.stage import run as recommend_run
    from blast_ray.train.stage import run as train_run

    store = ArtifactStore(str(tmp_path))
    cfg = PipelineConfig()
    cfg.dataset.name = "baby"
    cfg.train = TrainConfig(model="lightgcn", epochs=2, lr=0.01)
    ctx = StageContext(cfg=cfg, store=store, run_id="r1", outputs={"etl": _etl_output(store, baby_small)})
    tr = StageOutput.open(store, "baby", "train", {"t": 1}).begin()
    res = train_run(ctx, tr)
    tr.commit(res["row_counts"], res["timings"], res["extra"])
    assert {"valid.recall@20", "test.recall@20", "test.ndcg@20", "best_epoch"} <= set(res["metrics"])
    cap = res["extra"]["epoch_cap"]  # 2 epochs from scratch: the cap is hit while still improving
    assert cap == {"hit": True, "still_improving": cap["best_epoch"] == 1, "best_epoch": res["metrics"]["best_epoch"],
                   "epochs_run": 2}
    assert res["extra"]["select_metric"] == "recall@20"
    assert store.exists(*tr.parts, "model.pt") and store.exists(*tr.parts, "history.parquet")
    ctx.outputs["train"] = tr
    ev = StageOutput.open(store, "baby", "evaluate", {"e": 1}).begin()
    m = evaluate_run(ctx, ev)["metrics"]
    assert m["test.recall@20"] == pytest.approx(res["metrics"]["test.recall@20"], rel=1e-5)
    cfg.recommend.top_k = 5
    cfg.recommend.batch_users = 512
    rec = StageOutput.open(store, "baby", "recommend", {"r": 1}).begin()
    r = recommend_run(ctx, rec)
    assert r["row_counts"]["recommendations"] == N_USERS * 5
    df = pd.read_parquet(rec.path("recommendations"))
    seen = (baby_small.train + baby_small.valid + baby_small.test).tocsr()
    assert np.asarray(seen[df.user_idx.to_numpy(), df.item_idx.to_numpy()]).ravel().sum() == 0

    # Warm start from the committed output above: one epoch on top of the trained weights starts far
    # above a cold run's first epoch.
    cold_hist = pd.read_parquet(tr.path("history.parquet"))
    cold_first = float(cold_hist["valid.recall@20"].iloc[0])
    assert res["extra"]["warm_started"] is False
    capsys.readouterr()
    cfg.train = TrainConfig(model="lightgcn", epochs=1, lr=0.01, warm_start_from=tr.uri(), progress=True)
    warm_out = StageOutput.open(store, "baby", "train", cfg.to_dict()["train"]).begin()
    assert warm_out.fingerprint != tr.fingerprint
    with caplog.at_level(logging.INFO, logger="blast_ray.train"):
        warm = train_run(ctx, warm_out)
    assert warm["extra"]["warm_started"] is True and warm["extra"]["warm_start_from"] == tr.uri()
    assert any("warm start from" in r.getMessage() for r in caplog.records)
    warm_first = float(pd.read_parquet(warm_out.path("history.parquet"))["valid.recall@20"].iloc[0])
    bar = capsys.readouterr().err  # progress=True: the tqdm bar even though stderr is not a TTY
    assert "train lightgcn" in bar and "1/1" in bar and f"recall20={warm_first:.4f}" in bar, bar[-500:]
    print(f"valid recall@20 after epoch 1: cold {cold_first:.4f}, warm {warm_first:.4f}")
    assert warm_first > 1.5 * cold_first + 0.002, (cold_first, warm_first)
    # Another embedding size: shapes differ -> full retrain, the reason logged and in the manifest.
    caplog.clear()
    cfg.train = TrainConfig(model="lightgcn", embedding_dim=32, epochs=1, lr=0.01, warm_start_from=tr.uri())
    other = StageOutput.open(store, "baby", "train", cfg.to_dict()["train"]).begin()
    with caplog.at_level(logging.INFO, logger="blast_ray.train"):
        cold = train_run(ctx, other)
    assert cold["extra"]["warm_started"] is False
    assert "shape of" in cold["extra"]["warm_start_reason"] and "(1500, 64)" in cold["extra"]["warm_start_reason"]
    assert any("full retrain" in r.getMessage() and "shape of" in r.getMessage() for r in caplog.records)
