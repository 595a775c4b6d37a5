"""The evaluate stage trains each baseline with its own `evaluate.baseline_train` values (the tuned
ones of `blast tune`) instead of the train section's: a real MovieLens-100k pipeline run."""

from __future__ import annotations

from blast_ray.config import load_config
from blast_ray.pipeline import run_pipeline


def test_evaluate_trains_a_baseline_with_its_own_values(data_dir, ml100k_store, tmp_path):
    from jobs.smoke import smoke_config

    path = smoke_config(data_dir, str(ml100k_store), tmp_path / "cfg.yaml", epochs=1,
                        train={"model": "bpr", "embedding_dim": 16, "batch_size": 4096},
                        evaluate={"baselines": ["pop", "lightgcn"],
                                  "baseline_train": {"lightgcn": {"epochs": 3, "patience": 3, "n_layers_ui": 1, "lr": 0.005},
                                                     "bpr": {"lr": 0.004}}})  # bpr is the main model: unused
    cfg = load_config(path)
    cfg.train.progress = False
    res = run_pipeline(cfg, stages=("etl", "train", "evaluate"), run_id="baseline-train")
    assert res.ok, res.error
    ev = res.manifests["evaluate"]["extra"]
    assert ev["baseline_training"]["overrides"] == {"lightgcn": {"lr": 0.005, "n_layers_ui": 1, "epochs": 3, "patience": 3}}
    assert ev["baselines"]["lightgcn"]["test.recall@20"] > 0
    # the baseline trained its own 3 epochs; the main model (bpr) its train section's 1
    assert res.manifests["train"]["extra"]["epoch_cap"]["epochs_run"] == 1
    from blast_ray.evaluate.artifacts import load_baseline_history
    from blast_ray.store import ArtifactStore, StageOutput

    m = res.manifests["evaluate"]
    out = StageOutput(ArtifactStore(cfg.store), cfg.dataset.name, "evaluate", m["fingerprint"], m.get("config"), m.get("inputs", {}))
    assert list(load_baseline_history(out)["lightgcn"]["history"]["epoch"]) == [0, 1, 2]  # 0-based
