"""`blast tune` on the real MovieLens-100k: search-space validation, a tiny Ray Tune run (ASHA,
seeded search, the fallback point first, results in the store, valid.* only, the best YAML loads),
`--resume` restoring the finished experiment instead of re-running it, and a BLAST run whose
trials re-run the graphs/augment stages for their own values (cached per fingerprint), followed by
the one final train + evaluate that computes test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from blast_ray.cli import main
from blast_ray.config import load_config
from blast_ray.tune.runner import config_with, kept_components
from blast_ray.tune.space import SpaceError, load_space, space_from_dict

SPACES = Path(__file__).resolve().parent.parent / "configs" / "spaces"
ML100K = Path(__file__).resolve().parent.parent / "configs" / "ml-100k.yaml"


def _check(space, cfg):
    space.check_against(cfg.to_dict(), lambda values: config_with(cfg, values))


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"train.lr": {"loguniform": [0.0, 0.1]}}, "train.lr"),  # log scale needs a > 0
        ({"train.lr": {"uniform": [0.1, 0.01]}}, "train.lr"),  # a < b
        ({"train.lr": {"normal": [0, 1]}}, "train.lr"),  # unknown distribution
        ({"train.lr": [0.1, 0.01]}, "train.lr"),  # no distribution name
        ({"train.n_layers_ui": {"randint": [0.5, 3]}}, "train.n_layers_ui"),
        ({"train.lr": {"quniform": [0.1, 0.5]}}, "train.lr"),  # q missing
        ({"lr": {"choice": [0.1]}}, "lr"),  # not dotted
        ({"features.batch_size": {"choice": [8, 16]}}, "features.batch_size"),  # upstream of graphs
        ({"train.epochs": {"choice": [5, 10]}}, "train.epochs"),  # --max-epochs owns it
        ({"train.lr": {"choice": [0.1, 0.1]}}, "train.lr"),  # duplicate choice
        ({"train.lr": {"choice": [0.1]}, "fallback": {"train.lr": 0.5}}, "fallback.train.lr"),  # unreachable
        ({"train.lr": {"choice": [0.1]}, "fallback": {"train.l2_weight": 0.0}}, "fallback.train.l2_weight"),
        ({"train.lr": {"choice": [0.1]}, "fixed": {"train.lr": 0.1}}, "train.lr"),  # fixed and tuned
        ({"fixed": {"train.model": "bpr"}}, "tunes no key"),
    ],
)
def test_space_structure_errors_name_the_key(data, key):
    with pytest.raises(SpaceError) as e:
        space_from_dict(data, source="s.yaml")
    msg = str(e.value)
    assert key in msg and "s.yaml" in msg and "\n" not in msg


def test_space_values_checked_against_the_config(tmp_path):
    cfg = load_config(ML100K)
    for data, key, why in (
        ({"train.prune_ratio": {"choice": [0.5, 1.5]}}, "train.prune_ratio", "1.5"),  # the config's range [0, 1)
        ({"train.learning_rate": {"choice": [0.1]}}, "train.learning_rate", "not a config key"),
        ({"train.model": {"choice": ["blast", "mf"]}}, "train.model", "'mf'"),
        ({"train.lr": {"choice": [0.1]}, "fixed": {"augment.eps": -1.0}}, "augment.eps", "fixed"),
    ):
        with pytest.raises(SpaceError) as e:
            _check(space_from_dict(data, source="s.yaml"), cfg)
        assert key in str(e.value) and why in str(e.value) and "\n" not in str(e.value), str(e.value)
    (tmp_path / "bad.yaml").write_text("train.lr: {loguniform: [1.0e-4\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(tmp_path / "bad.yaml")
    with pytest.raises(SpaceError, match="does not exist"):
        load_space(tmp_path / "missing.yaml")
    # YAML 1.1 reads 1e-4 as a string: bounds accept it, and the domain samples floats.
    sp = space_from_dict({"train.lr": {"loguniform": ["1e-4", "1e-2"]}, "train.n_layers_ui": {"randint": [0, 2]}})
    assert sp.param("train.lr").args == (1e-4, 1e-2)
    assert sp.param("train.n_layers_ui").contains(2) and not sp.param("train.n_layers_ui").contains(3)


@pytest.mark.parametrize("model", ["blast", "bpr", "lightgcn", "freedom"])
def test_shipped_spaces(model):
    """Every shipped space validates against the ml-100k config, fixes its model, and (except BPR,
    the simplest) contains the simpler model it extends as its first (fallback) point."""
    space = load_space(SPACES / f"{model}.yaml")
    assert space.fixed["train.model"] == model
    cfg = load_config(ML100K)
    _check(space, cfg)
    assert {"train.lr", "train.l2_weight"} <= set(space.keys)
    if model == "bpr":
        assert not space.fallback
        return
    simple = kept_components(config_with(cfg, {**space.fixed, **space.fallback}))
    assert not any(v for k, v in simple.items() if k != "graph_propagation"), simple
    if model == "lightgcn":
        assert space.fallback == {"train.n_layers_ui": 0} and not simple["graph_propagation"]  # = BPR-MF
    if model == "blast":
        assert {"train.prune_ratio", "train.reg_weight", "train.user_reg_weight", "augment.ratio", "augment.restrict_negatives",
                "augment.eps", "augment.row_target", "augment.col_target", "train.n_layers_ui", "train.n_layers_ii",
                "train.n_layers_uu", "graphs.knn_k"} <= set(space.keys)
        full = kept_components(config_with(cfg, {**space.fixed, "train.n_layers_ii": 1, "train.n_layers_uu": 1,
                                                 "train.prune_ratio": 0.5, "augment.ratio": 0.1, "graphs.user_graph": True}))
        assert full["item_graph"] and full["user_graph"] and full["pruning"] and full["ot_augmentation"]


def _tune_config(data_dir, store, path, stages, **train) -> Path:
    from jobs.smoke import smoke_config

    smoke_config(data_dir, str(store), path, epochs=5, train={"embedding_dim": 16, "batch_size": 4096, **train})
    cfg = yaml.safe_load(path.read_text())
    cfg["stages"] = list(stages)
    cfg["evaluate"]["baselines"] = []
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _small_lightgcn_space(tmp_path: Path) -> Path:
    """LightGCN over lr and 0-2 layers (fallback: 0 layers = BPR-MF), augmentation off."""
    path = tmp_path / "lightgcn.yaml"
    path.write_text(yaml.safe_dump({
        "fixed": {"train.model": "lightgcn", "augment.enabled": False},
        "fallback": {"train.n_layers_ui": 0},
        "train.lr": {"loguniform": [2.0e-3, 2.0e-2]},
        "train.n_layers_ui": {"choice": [0, 1, 2]},
    }))
    return path


def _trial_files(exp: Path) -> dict[str, int]:
    return {str(p.relative_to(exp)): p.stat().st_size for p in sorted(exp.glob("trial_*/result.json"))}


def test_tune_lightgcn_valid_only_asha_and_resume(data_dir, ml100k_store, tmp_path, ray_local, capsys):
    import ray.cloudpickle as cloudpickle
    from ray.tune import Tuner

    cfg_path = _tune_config(data_dir, ml100k_store, tmp_path / "cfg.yaml", ("etl", "train", "evaluate"))
    space_path = _small_lightgcn_space(tmp_path)
    out = tmp_path / "best" / "best.yaml"
    argv = ["tune", "--config", str(cfg_path), "--space", str(space_path), "--trials", "3", "--max-epochs", "2",
            "--grace-epochs", "1", "--cpus-per-trial", "0.5", "--no-final", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "best valid.recall@20" in printed and "no test metric computed" in printed

    tune_dir = ml100k_store / "ml-100k" / "tune"
    (exp,) = [p for p in tune_dir.iterdir() if p.is_dir()]
    assert exp.name.startswith("lightgcn-") and Tuner.can_restore(str(exp))
    summary = json.loads((exp / "tune_summary.json").read_text())
    assert summary["trials_budget"] == 3 and len(summary["trials"]) == 3
    assert all(t["status"] == "ok" and 1 <= t["epochs"] <= 2 for t in summary["trials"])
    # The persisted experiment is what ran: ASHA on valid.recall@20 per epoch, 3 samples, seeded search.
    with open(exp / "tuner.pkl", "rb") as f:
        state = cloudpickle.load(f)
    tc = state["_tune_config"]
    assert type(tc.scheduler).__name__ == "AsyncHyperBandScheduler" and tc.scheduler._max_t == 2
    assert tc.scheduler._time_attr == "training_iteration" and tc.metric == "valid.recall@20" and tc.mode == "max"
    assert tc.num_samples == 3 and type(tc.search_alg).__name__ == "BasicVariantGenerator"
    # The fallback point (LightGCN with 0 layers = BPR-MF) is the first trial.
    first = min(summary["trials"], key=lambda t: t["trial_id"])
    assert first["values"]["train.n_layers_ui"] == 0
    # Only validation is ever read during tuning: every reported metric is valid.*, no test.* key,
    # and no train/evaluate stage output (the pipeline's test metrics) exists.
    for t in summary["trials"]:
        metric_keys = {k for k in t["reported_keys"] if "@" in k}
        assert metric_keys and all(k.startswith("valid.") for k in metric_keys), metric_keys
        assert not any(k.startswith("test") or "/test" in k for k in t["reported_keys"])
    for line in (exp / f"trial_{first['trial_id']}" / "result.json").read_text().splitlines():
        assert not any(k.startswith("test") for k in json.loads(line))
    assert not (ml100k_store / "ml-100k" / "stages" / "train").exists()
    assert summary["final"]["metrics"] is None

    # The best configuration: the dataset config with the chosen values, loadable, naming the run.
    best = summary["best"]
    assert best["valid.recall@20"] == max(t["valid.recall@20"] for t in summary["trials"])
    text = out.read_text()
    assert text.startswith(f"# tuned by `blast tune` run {exp.name}") and "chosen on VALIDATION" in text
    assert (exp / "best_config.yaml").read_text().splitlines()[0] == text.splitlines()[0]
    chosen = load_config(out)
    assert chosen.train.model == "lightgcn" and not chosen.augment.enabled
    assert chosen.train.lr == pytest.approx(best["values"]["train.lr"])
    assert chosen.train.n_layers_ui == best["values"]["train.n_layers_ui"]
    assert chosen.train.embedding_dim == 16 and chosen.dataset.name == "ml-100k"
    assert chosen.train.epochs == 5  # the final run keeps the config's epochs, not the trial cap

    # Running it again: refused without --resume; with --resume the finished experiment is restored
    # (Tuner.restore), no trial trains again.
    before = _trial_files(exp)
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    assert "(restored)" in capsys.readouterr().out
    assert _trial_files(exp) == before
    again = json.loads((exp / "tune_summary.json").read_text())
    assert again["restored"] and again["best"]["values"] == best["values"]
    assert main([*argv[:-2], "--resume", "--name", "nothing-here"]) == 2


@pytest.mark.slow
def test_tune_blast_trials_rerun_graphs_and_augment_then_final(data_dir, ml100k_store, tmp_path, ray_local, capsys):
    """BLAST over knn_k and the OT ratio: each trial runs graphs/augment for its own values through
    the pipeline (one committed output per distinct value, shared by the trials that use it); the
    final run of the chosen configuration is the only one with test metrics. Staged search
    (``--start-from`` a finished LightGCN tune's summary): trial 1 is the fallback at LightGCN's lr,
    trial 2 the base config's values of every tuned key (outside the choice lists too) at that lr."""
    cfg_path = _tune_config(data_dir, ml100k_store, tmp_path / "cfg.yaml",
                            ("etl", "graphs", "augment", "train", "evaluate"), model="blast", epochs=1, patience=1)
    space_path = tmp_path / "blast.yaml"
    space_path.write_text(yaml.safe_dump({
        "fixed": {"train.model": "blast", "augment.enabled": True},
        # knn_k 5 != the base config's 10: the first trial needs its own graphs (and augment) output.
        "fallback": {"train.n_layers_ii": 0, "augment.ratio": 0.0, "graphs.knn_k": 5},
        "graphs.knn_k": {"choice": [5, 10]},
        "augment.ratio": {"choice": [0.0, 0.05]},
        "train.n_layers_ii": {"choice": [0, 1]},
        "train.lr": {"loguniform": [1.0e-3, 1.0e-2]},
    }))
    raw = yaml.safe_load(cfg_path.read_text())  # BLAST parts on in the base (the tuned ml-100k config has them off)
    raw["train"].update(n_layers_ii=1)
    raw["graphs"]["knn_k"] = 10
    raw["augment"]["ratio"] = 0.1
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    lightgcn = tmp_path / "lightgcn_summary.json"  # what a finished LightGCN tune wrote (its chosen values)
    lightgcn.write_text(json.dumps({"best": {"values": {"train.lr": 0.0042, "train.l2_weight": 0.0}}}))
    assert main(["tune", "--config", str(cfg_path), "--space", str(space_path), "--trials", "2", "--max-epochs", "1",
                 "--grace-epochs", "1", "--cpus-per-trial", "0.5", "--seed", "7", "--start-from", str(lightgcn)]) == 0
    printed = capsys.readouterr().out
    assert "final run tune-" in printed and "test.recall@20" in printed
    exp = next(p for p in (ml100k_store / "ml-100k" / "tune").iterdir() if p.is_dir())
    summary = json.loads((exp / "tune_summary.json").read_text())
    first, second = sorted(summary["trials"], key=lambda t: t["trial_id"])
    assert first["values"] == {"train.n_layers_ii": 0, "augment.ratio": 0.0, "graphs.knn_k": 5, "train.lr": 0.0042}
    assert second["values"] == {"train.n_layers_ii": 1, "augment.ratio": 0.1, "graphs.knn_k": 10, "train.lr": 0.0042}
    assert summary["search"]["start_values"] == {"train.lr": 0.0042, "train.l2_weight": 0.0}
    assert main(["tune", "--config", str(cfg_path), "--space", str(space_path), "--start-from", str(tmp_path)]) == 2
    assert "no tune_summary.json" in capsys.readouterr().err
    knn = {10} | {t["values"]["graphs.knn_k"] for t in summary["trials"]}  # base config's k = 10
    assert 5 in knn
    stages = ml100k_store / "ml-100k" / "stages"
    graphs = [p for p in (stages / "graphs").iterdir() if (p / "_MANIFEST.json").exists()]
    assert sorted(json.loads((p / "_MANIFEST.json").read_text())["config"]["graphs"]["knn_k"] for p in graphs) == sorted(knn)
    for t in summary["trials"]:
        assert not any(k.startswith("test") for k in t["reported_keys"])
    final = summary["final"]["metrics"]
    assert final["test.recall@20"] > 0 and "valid.recall@20" in final
    assert summary["best"]["kept"]["item_graph"] == (summary["best"]["values"]["train.n_layers_ii"] > 0)
    # The final run trained the chosen configuration: its train manifest holds the chosen values.
    (train_out,) = [p for p in (stages / "train").iterdir() if (p / "_MANIFEST.json").exists()]
    tcfg = json.loads((train_out / "_MANIFEST.json").read_text())["config"]["train"]
    assert tcfg["n_layers_ii"] == summary["best"]["values"]["train.n_layers_ii"] and tcfg["model"] == "blast"


def test_tune_refuses_s3_store_and_cpu_starvation(s3_bucket, tmp_path, capsys):
    """An S3 store and trial resources that leave no CPU for the graphs tasks fail with one line,
    before any trial starts."""
    from blast_ray.config import ConfigError
    from blast_ray.tune.runner import TuneOptions, _check_free_cpus

    argv = ["tune", "--config", str(ML100K), "--space", str(SPACES / "lightgcn.yaml"), "--store", f"{s3_bucket}/x",
            "--trials", "2", "--no-final"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs a local store" in err and len(err.strip().splitlines()) == 1
    cfg = load_config(ML100K)
    space = space_from_dict({"graphs.knn_k": {"choice": [5, 10]}})
    with pytest.raises(ConfigError, match="--cpus-per-trial"):
        _check_free_cpus(space, cfg, TuneOptions(cpus_per_trial=1.0, max_concurrent=2), cluster_cpus=2.0)
    _check_free_cpus(space, cfg, TuneOptions(cpus_per_trial=0.5, max_concurrent=2), cluster_cpus=2.0)
    _check_free_cpus(space_from_dict({"train.lr": {"choice": [0.01]}}), cfg,
                     TuneOptions(cpus_per_trial=1.0, max_concurrent=2), cluster_cpus=2.0)  # no graphs in trials
    with pytest.raises(ConfigError, match="tune option 'trials'"):
        TuneOptions(trials=0)


def test_best_config_yaml_keeps_data_paths_from_another_folder(tmp_path):
    """The best YAML is the dataset config + overrides + chosen values; written elsewhere, its
    relative data paths still point at the same files."""
    from blast_ray.tune.runner import best_config_yaml

    out = tmp_path / "deep" / "best.yaml"
    out.parent.mkdir()
    text = best_config_yaml(ML100K, ["train.epochs=7"], {"train.lr": 0.005, "augment.ratio": 0.0}, "run X\nline 2",
                            out_dir=out.parent)
    out.write_text(text)
    assert text.startswith("# run X\n# line 2\n")
    chosen, orig = load_config(out), load_config(ML100K)
    assert chosen.dataset.paths == orig.dataset.paths
    assert chosen.train.epochs == 7 and chosen.train.lr == 0.005 and chosen.augment.ratio == 0.0
    assert chosen.train.n_layers_ui == orig.train.n_layers_ui and chosen.augment.restrict_negatives is False


@pytest.mark.slow
def test_interrupted_tune_resumes_trials_from_their_checkpoints(data_dir, ml100k_store, tmp_path):
    """Ctrl-C during a trial, then `--resume`: Tuner.restore continues the unfinished trial from its
    last per-epoch checkpoint (the epoch count goes on, no epoch is trained twice)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg_path = _tune_config(data_dir, ml100k_store, tmp_path / "cfg.yaml", ("etl", "train", "evaluate"),
                            epochs=30, patience=30)
    argv = [sys.executable, "-m", "blast_ray.cli", "tune", "--config", str(cfg_path), "--space",
            str(SPACES / "lightgcn.yaml"), "--trials", "1", "--max-epochs", "30", "--grace-epochs", "30",
            "--cpus-per-trial", "0.5", "--no-final", "--name", "interrupted"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("RAY_ADDRESS", None)
    exp = ml100k_store / "ml-100k" / "tune" / "interrupted"
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if sum(len(p.read_text().splitlines()) for p in exp.glob("trial_*/result.json")) >= 3:
            break
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # Tune saves the experiment state and stops
    proc.communicate(timeout=120)
    (result,) = exp.glob("trial_*/result.json")
    done_before = len(result.read_text().splitlines())
    assert 3 <= done_before < 30, "the trial was not interrupted mid-way"
    res = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "(restored)" in res.stdout
    rows = [json.loads(line) for line in result.read_text().splitlines()]
    (k,) = [i for i, r in enumerate(rows) if i > 0 and r["iterations_since_restore"] == 1]  # the resume
    assert k == done_before and [r["epoch"] for r in rows[:k]] == list(range(k))
    e0 = int(rows[k]["epoch"])
    # Continued from the last persisted checkpoint: the epoch whose checkpoint the interrupt cut
    # off may be trained again (Tune is at-least-once), never the trial from scratch.
    assert k - 1 <= e0 <= k and e0 >= 2
    assert [r["epoch"] for r in rows[k:]] == list(range(e0, 30))
    if e0 < k:  # the redone epoch starts from the same state (weights, optimizer, RNG): same result
        assert rows[k]["valid.recall@20"] == pytest.approx(rows[e0]["valid.recall@20"], rel=1e-6)


def test_tune_rerank_at_full_length_with_also_from(data_dir, ml100k_store, tmp_path, ray_local, capsys):
    """`--also-from` adds a finished tune's choice as one point; `--rerank 2` re-trains the top 2
    trials and that point for the config's full epochs (validation only) and chooses the best there.
    The full-length figure is what the train stage gets for the same config; a `--resume` re-ranks
    from the stored scores without training again."""
    import doctest

    from blast_ray.pipeline import run_pipeline
    from blast_ray.tune import rerank as rr

    assert doctest.testmod(rr).failed == 0
    cfg_path = _tune_config(data_dir, ml100k_store, tmp_path / "cfg.yaml", ("etl", "train", "evaluate"),
                            epochs=4, patience=4)
    space_path = _small_lightgcn_space(tmp_path)
    common = ["--config", str(cfg_path), "--space", str(space_path), "--max-epochs", "1", "--grace-epochs", "1",
              "--cpus-per-trial", "0.5", "--no-final"]
    tune_dir = ml100k_store / "ml-100k" / "tune"
    # what --also-from reads of a finished tune: its tune_summary.json's best.values (a point no
    # sampled trial has; a key the space does not tune is ignored)
    simpler = {"train.lr": 0.0123, "train.n_layers_ui": 1, "train.l2_weight": 0.0}
    (tune_dir / "simpler").mkdir(parents=True)
    (tune_dir / "simpler" / "tune_summary.json").write_text(json.dumps({"best": {"values": simpler}}))
    argv = ["tune", *common, "--trials", "2", "--name", "reranked", "--also-from", str(tune_dir / "simpler"),
            "--rerank", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "re-rank 1:" in printed and "<- chosen" in printed and "full length" in printed
    summary = json.loads((tune_dir / "reranked" / "tune_summary.json").read_text())
    assert summary["search"]["also_from"] == [simpler]
    cands = summary["rerank"]["candidates"]
    assert summary["rerank"]["epochs"] == 4 and 2 <= len(cands) <= 3
    also_point = {"train.n_layers_ui": 1, "train.lr": 0.0123}
    assert any(c["values"] == also_point for c in cands)  # the --also-from point, a trial of the tune
    assert all(c["full_metric"] is not None and 1 <= c["best_epoch"] <= 4 for c in cands)
    chosen = summary["rerank"]["chosen"]
    assert cands[chosen]["full_metric"] == max(c["full_metric"] for c in cands)
    assert summary["best"]["values"] == cands[chosen]["values"]
    assert summary["best"]["valid.recall@20"] == cands[chosen]["full_metric"]
    # validation only: the re-rank wrote no train/evaluate stage output (no test metric anywhere)
    assert not (ml100k_store / "ml-100k" / "stages" / "train").exists()
    scores = sorted((tune_dir / "rerank-scores").glob("*.json"))
    assert len(scores) == len(cands)

    # the full-length figure is the train stage's for the same configuration
    best_cfg = load_config(tune_dir / "reranked" / "best_config.yaml")
    best_cfg.train.progress = False
    res = run_pipeline(best_cfg, stages=("etl", "train"), run_id="rerank-check")
    assert res.ok, res.error
    assert res.manifests["train"]["extra"]["metrics"]["valid.recall@20"] == pytest.approx(cands[chosen]["full_metric"],
                                                                                          abs=1e-6)
    # --resume: the finished experiment restored and re-ranked from the stored scores, nothing retrained
    stamps = [p.stat().st_mtime_ns for p in scores]
    assert main([*argv, "--resume"]) == 0
    again = json.loads((tune_dir / "reranked" / "tune_summary.json").read_text())
    assert again["rerank"]["candidates"] == cands and [p.stat().st_mtime_ns for p in scores] == stamps
    assert main([*argv[:-4], "--also-from", str(tmp_path / "nowhere")]) == 2
    assert "--also-from" in capsys.readouterr().err
