"""benchmarks/quality_tables.py without training: the staged search's start points on the real
ml-100k config and BLAST space, the ablation plan (which rows need a training, which are no-ops of
the chosen configuration) and the tables' handling of rows that are the same computation.

The first ml-100k run printed the rows ``wo_text`` and ``wo_user_graph`` with exactly FREEDOM's mean
and std. Not a keying bug: BLAST's chosen trial was its fallback point (every part off) at the same
sampled lr / l2 / layers as FREEDOM's chosen fallback trial (both searches seeded alike), and BLAST
without its user branch is FREEDOM's computation, so the runs were bit-identical. The table now says
so (and no-op ablations are not re-trained and shown as copies of full BLAST)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from blast_ray.config import ConfigError, load_config
from blast_ray.tune.runner import TuneOptions, config_with, experiment_name, kept_components, start_points
from blast_ray.tune.space import load_space

ROOT = Path(__file__).resolve().parent.parent
ML100K = ROOT / "configs" / "ml-100k.yaml"


def _qt():
    spec = importlib.util.spec_from_file_location("quality_tables", ROOT / "benchmarks" / "quality_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# BLAST's chosen values of the first ml-100k run (trial 0 of quality-blast-t10-e30) and FREEDOM's.
FIRST_BLAST = {"train.model": "blast", "augment.enabled": True, "augment.col_target": "mean_popularity",
               "augment.eps": 0.1, "augment.ratio": 0.0, "augment.restrict_negatives": False,
               "augment.row_target": "mean_activity", "graphs.knn_k": 20, "graphs.user_graph": True,
               "train.l2_weight": 0.0, "train.lr": 0.00225,
               "train.n_layers_ii": 0, "train.n_layers_ui": 1, "train.n_layers_uu": 0, "train.prune_ratio": 0.0,
               "train.reg_weight": 0.0, "train.user_reg_weight": 0.0}


def test_staged_start_points_fall_back_to_the_tuned_simpler_model():
    """BLAST's search starts at LightGCN's chosen values: point 1 is LightGCN + BPR inside BLAST's
    space (no part kept but propagation), point 2 the shipped config's BLAST parts at those values."""
    # the shipped BLAST parts of a config (set here: the shipped ml-100k values are tuned and may drop parts)
    cfg = config_with(load_config(ML100K), {"train.n_layers_ii": 1, "train.n_layers_uu": 1, "train.prune_ratio": 0.8,
                                            "augment.ratio": 0.1, "graphs.user_graph": True})
    space = load_space(ROOT / "configs" / "spaces" / "blast.yaml")
    base = config_with(cfg, space.fixed)
    lightgcn_best = {"train.lr": 0.0089, "train.l2_weight": 1.0e-5, "train.n_layers_ui": 3}
    p1, p2 = start_points(space, base, {**lightgcn_best, "train.model": "lightgcn", "augment.enabled": False})
    assert {k: p1[k] for k in lightgcn_best} == lightgcn_best == {k: p2[k] for k in lightgcn_best}
    assert "train.model" not in p1 and "augment.enabled" not in p2  # only keys the space tunes
    kept1 = kept_components(config_with(base, p1))
    assert kept1["graph_propagation"] and not any(v for k, v in kept1.items() if k != "graph_propagation"), kept1
    assert set(p2) == set(space.keys)
    assert p2["train.n_layers_ii"] == cfg.train.n_layers_ii and p2["train.prune_ratio"] == cfg.train.prune_ratio
    kept2 = kept_components(config_with(base, p2))
    assert kept2["item_graph"] and kept2["user_graph"] and kept2["pruning"] and kept2["ot_augmentation"]
    # the shipped ml-100k config carries a tune's fallback choice (every part off): point 2 is then
    # the method's default parts (user graph, 1/1 layers, pruning 0.8, OT 0.1, restriction), so a
    # re-tune still tries the full model instead of dropping point 2 as a copy of point 1
    tuned = config_with(load_config(ML100K), space.fixed)
    q1, q2 = start_points(space, tuned, lightgcn_best)
    assert not any(v for k, v in kept_components(config_with(tuned, q1)).items() if k != "graph_propagation")
    assert (q2["train.n_layers_ii"], q2["train.n_layers_uu"], q2["train.prune_ratio"], q2["augment.ratio"],
            q2["graphs.user_graph"], q2["augment.restrict_negatives"]) == (1, 1, 0.8, 0.1, True, True)
    assert {k: q2[k] for k in lightgcn_best} == lightgcn_best
    # without start values: the fallback alone; a start sharing no key fails naming the fix
    assert start_points(space, base, {}) == [space.fallback]
    with pytest.raises(ConfigError, match="share no key.*lightgcn for blast"):
        start_points(space, base, {"train.model": "lightgcn"})
    with pytest.raises(ConfigError, match="tune start point 1"):
        start_points(space, base, {"train.lr": -1.0})
    # another start is another experiment (never resumed by mistake)
    assert experiment_name(space, base, TuneOptions()) != experiment_name(space, base, TuneOptions(start_values=lightgcn_best))
    with pytest.raises(ConfigError, match="start_values"):
        TuneOptions(start_values={"lr": 0.1})


def test_ablation_plan_skips_parts_the_chosen_configuration_does_not_use():
    qt = _qt()
    cfg = load_config(ML100K)
    plan = qt.ablation_plan(cfg, FIRST_BLAST)
    assert plan["wo_ot"] is None and plan["wo_fn_restriction"] is None  # ratio 0, no restriction: nothing to remove
    assert plan["wo_user_graph"] is not None and plan["wo_user_graph"].graphs.user_graph is False
    assert plan["wo_text"] is not None and "profiles" not in plan["wo_text"].stages
    assert plan["wo_text"].train.lr == FIRST_BLAST["train.lr"]  # the chosen values are kept in every variant
    full = qt.ablation_plan(cfg, {**FIRST_BLAST, "augment.ratio": 0.1, "augment.restrict_negatives": True,
                                  "graphs.user_graph": True})
    assert all(v is not None for v in full.values())
    assert full["wo_ot"].augment.ratio == 0.0 and full["wo_fn_restriction"].augment.restrict_negatives is False
    assert qt.ablation_plan(cfg, {**FIRST_BLAST, "graphs.user_graph": False})["wo_user_graph"] is None


def _metrics(prefix: str, mean: float, std: float) -> dict[str, float]:
    out = {}
    for i, m in enumerate(("recall@10", "recall@20", "ndcg@10", "ndcg@20")):
        out[f"{prefix}.test.{m}.mean"] = mean + i / 100
        out[f"{prefix}.test.{m}.std"] = std
    return out


def test_tables_say_when_an_ablation_row_is_another_models_computation():
    """The first run's table: an ablation row equal to FREEDOM's in every mean and std is labelled
    as the same computation; rows with their own numbers print their own keys; no-op rows are not
    printed as numbers."""
    import argparse

    qt = _qt()
    ds = "ml-100k"
    out = {"machine": "m", "seeds": [2024, 2025], **_metrics(f"{ds}.freedom", 0.3732, 0.0013),
           **_metrics(f"{ds}.blast", 0.3613, 0.0052), **_metrics(f"{ds}.lightgcn", 0.3806, 0.0029),
           **_metrics(f"{ds}.ablation.wo_user_graph", 0.3732, 0.0013),
           **_metrics(f"{ds}.ablation.wo_text", 0.3500, 0.0040), f"{ds}.ablation.wo_ot.noop": True}
    assert qt.identical_to(out, ds, f"{ds}.ablation.wo_user_graph") == "freedom"
    assert qt.identical_to(out, ds, f"{ds}.ablation.wo_text") is None
    assert qt.identical_to(out, ds, f"{ds}.freedom") is None  # a model is not "identical" to itself
    md = qt.md_tables(out, argparse.Namespace(datasets=[ds], trials=10, max_epochs=30), dataset_done=True)
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| wo_")}
    assert "identical to freedom" in rows["wo_user_graph"]
    assert "0.3600 ± 0.0040" in rows["wo_text"] and "identical" not in rows["wo_text"]
    assert "not re-trained" in rows["wo_ot"] and "0.36" not in rows["wo_ot"]
    assert "| test recall@20 |" in md and "**0.3906 ± 0.0029**" in md  # best per row still marked


def test_tables_explain_a_trailing_blast_from_validation_figures():
    """Where a baseline wins, the table says so and explains it with the tune's validation figures:
    the staged search's start points and the seeds' valid means (the second ml-100k run's shape)."""
    import argparse

    qt = _qt()
    ds = "ml-100k"
    out = {"machine": "m", "seeds": [2024], **_metrics(f"{ds}.lightgcn", 0.3806, 0.0029),
           **_metrics(f"{ds}.blast", 0.3617, 0.0042), f"{ds}.best_baseline": "lightgcn",
           f"{ds}.blast_vs_best_baseline": -0.05, f"{ds}.blast_vs_best_baseline.p": 1e-17,
           f"{ds}.blast_vs_best_baseline.n_users": 943, f"{ds}.blast.search_started_from": "lightgcn",
           f"{ds}.blast.start_point1.valid": 0.3430, f"{ds}.blast.start_point2.valid": 0.3230,
           f"{ds}.blast.valid.recall@20.mean": 0.3397, f"{ds}.lightgcn.valid.recall@20.mean": 0.3550,
           f"{ds}.blast.keeps.graph_propagation": True, f"{ds}.blast.keeps.item_graph": False}
    md = qt.md_tables(out, argparse.Namespace(datasets=[ds], trials=10, max_epochs=30), dataset_done=True)
    assert "**the baseline wins**" in md and "-5.0% test Recall@20" in md
    assert "_Partial:" in md  # no <dataset>.seconds: the dataset's run did not finish
    out[f"{ds}.seconds"] = 2035.4
    md = qt.md_tables(out, argparse.Namespace(datasets=[ds], trials=10, max_epochs=30), dataset_done=True)
    assert "_Partial:" not in md and "Wall time of the last run of this dataset on this machine: 2035 s" in md
    why = next(line for line in md.splitlines() if line.startswith("**Why BLAST trails"))
    assert "0.3430" in why and "0.3230" in why and "-4.3%" in why and "0-layer item branch" in why
    assert "predates the model fix" in why  # the stored run has no blast_fallback_is_exact key
    out[f"{ds}.blast_fallback_is_exact"] = True  # a run after the fix: BLAST's fallback is LightGCN exactly
    md = qt.md_tables(out, argparse.Namespace(datasets=[ds], trials=10, max_epochs=30), dataset_done=True)
    why = next(line for line in md.splitlines() if line.startswith("**Why BLAST trails"))
    assert "0.3430" in why and "-4.3%" in why and "a 0-layer graph branch is off" in why
    out[f"{ds}.blast.keeps.item_graph"] = True  # a choice that keeps a part: no fallback story
    md = qt.md_tables(out, argparse.Namespace(datasets=[ds], trials=10, max_epochs=30), dataset_done=True)
    assert "fell back" not in md and "keeps some of its parts (graph_propagation, item_graph)" in md


def test_tables_call_a_tie_a_tie_and_check_the_issues_goals():
    """BLAST that fell back to LightGCN exactly ties it (relative 0, p = 1): the verdict says a tie
    and explains why it does not gain; the goals table marks each goal met / NOT met / not run from
    the flat keys (OT lift on Scientific: every backbone >= +2%)."""
    import argparse

    qt = _qt()
    out = {"machine": "m", "seeds": [2024], **_metrics("ml-100k.lightgcn", 0.3783, 0.003),
           **_metrics("ml-100k.blast", 0.3783, 0.003), "ml-100k.best_baseline": "lightgcn",
           "ml-100k.blast_vs_best_baseline": 0.0, "ml-100k.blast_vs_best_baseline.p": 1.0,
           "ml-100k.blast_vs_best_baseline.n_users": 943, "ml-100k.blast.search_started_from": "lightgcn",
           "ml-100k.blast.start_point1.valid": 0.35, "ml-100k.blast.keeps.graph_propagation": True,
           "ml-100k.blast_fallback_is_exact": True,
           "amazon-scientific.blast_vs_best_baseline": 0.041, "amazon-scientific.blast_vs_best_baseline.p": 0.01,
           "amazon-scientific.best_baseline": "freedom",
           "amazon-scientific.ot_lift.bpr.relative": 0.05, "amazon-scientific.ot_lift.lightgcn.relative": 0.01}
    args = argparse.Namespace(datasets=["ml-100k", "amazon-scientific", "amazon-baby"], trials=10, max_epochs=30)
    md = qt.md_tables(out, args, dataset_done=True)
    assert "Wilcoxon signed-rank p = 1 over 943 users: a tie." in md
    assert "**Why BLAST does not gain here" in md  # identical seeded runs: the same computation, said so
    assert "BLAST's validation choice is lightgcn's configuration inside BLAST's space" in md
    assert "seeded runs equal lightgcn's exactly" in md
    rows = {g: (f, st) for g, f, st in qt.goal_rows(out, args.datasets)}
    assert rows["ml-100k: BLAST >= the best tuned baseline (test Recall@20 mean)"] == (
        "+0.0% vs lightgcn", "met as a tie (BLAST's choice is lightgcn's configuration: the same computation)")
    assert rows["ml-100k: BLAST >= +3% over lightgcn with p < 0.05"][1] == "NOT met"
    assert rows["amazon-scientific: BLAST >= +3% over freedom with p < 0.05"] == ("+4.1%, p = 0.01", "met")
    assert rows["amazon-baby: BLAST >= the best tuned baseline (test Recall@20 mean)"] == ("-", "not run")
    lift = rows["amazon-scientific: OT augmentation lifts every backbone by >= 2%"]
    assert lift == ("bpr +5.0%, lightgcn +1.0%", "NOT met")
    assert "| ml-100k: BLAST >= +3% over lightgcn with p < 0.05 | +0.0%, p = 1 | **NOT met** |" in md


def test_a_run_keeps_other_datasets_and_redoes_one_whose_budget_changed():
    """Datasets may have different budgets (Baby and Sports get what fits): a run keeps every stored
    dataset, moves a legacy file-wide budget onto its datasets, and drops only the stored figures of
    a dataset it runs with another budget."""
    import argparse

    qt = _qt()
    legacy = {"machine": "m", "trials_per_model": 10, "max_epochs_per_trial": 30, "seeds": [2024, 2025],
              "ml-100k.blast.test.recall@20.mean": 0.36, "amazon-baby.bpr.test.recall@20.mean": 0.05}
    args = argparse.Namespace(datasets=["amazon-baby"], trials=3, max_epochs=15, seeds=2, seed_max_epochs=40, rerank=3)
    kept = qt.merge_previous(legacy, args)
    assert kept["ml-100k.blast.test.recall@20.mean"] == 0.36 and kept["ml-100k.trials_per_model"] == 10
    assert kept["ml-100k.seeds"] == [2024, 2025] and "trials_per_model" not in kept
    assert not any(k.startswith("amazon-baby.") for k in kept)  # another budget: redone
    same = argparse.Namespace(datasets=["ml-100k"], trials=10, max_epochs=30, seeds=2, seed_max_epochs=0, rerank=0)
    assert qt.merge_previous(legacy, same)["ml-100k.blast.test.recall@20.mean"] == 0.36  # same budget: resumed
    assert qt.dataset_budget(kept, "ml-100k") == (10, 30, [2024, 2025], 0, 0)


def test_blast_space_holds_freedom_and_the_rerank_chooses_at_full_length(monkeypatch):
    """FREEDOM's chosen values are a point of BLAST's space (user branch and OT off, FREEDOM's item
    graph / pruning / feature term on), evaluated as one more trial; the re-rank re-scores the top
    trials at full length on validation only and keeps the best (the capped tune's order may flip)."""
    from types import SimpleNamespace

    from blast_ray.tune.runner import embedded_point

    qt = _qt()
    space = load_space(ROOT / "configs" / "spaces" / "blast.yaml")
    base = config_with(load_config(ML100K), space.fixed)
    freedom = {"train.lr": 0.003, "train.l2_weight": 1e-4, "train.n_layers_ui": 2, "train.n_layers_ii": 1,
               "train.prune_ratio": 0.5, "train.reg_weight": 1e-3, "graphs.knn_k": 10, "train.model": "freedom"}
    p = embedded_point(space, freedom)
    assert "train.model" not in p and p["train.n_layers_ii"] == 1 and p["graphs.knn_k"] == 10
    kept = kept_components(config_with(base, p))
    assert kept["item_graph"] and kept["pruning"] and kept["item_feature_loss"]
    assert not (kept["user_graph"] or kept["ot_augmentation"] or kept["negative_restriction"] or kept["user_profile_loss"])
    opts = TuneOptions(start_values={"train.lr": 0.01}, also_from=(freedom,))
    assert experiment_name(space, base, opts) != experiment_name(space, base, TuneOptions(start_values={"train.lr": 0.01}))
    with pytest.raises(ConfigError, match="share no key"):
        embedded_point(space, {"train.model": "freedom"})

    rows = [{"trial_id": f"t{i}", "values": {"train.lr": lr, "train.n_layers_uu": uu}, "m": m}
            for i, (lr, uu, m) in enumerate([(0.01, 1, 0.26), (0.003, 0, 0.25), (0.01, 1, 0.26), (0.001, 2, 0.20),
                                             (0.005, 0, None)])]
    outcome = SimpleNamespace(trials=rows, metric="m")
    full = {0.01: 0.263, 0.003: 0.279, 0.001: 0.30}  # full-length validation of each candidate
    calls = []

    def fake_full_length_metric(cfg, metric, run_id):  # the training itself: tests/test_tune.py
        calls.append((cfg.train.lr, cfg.train.seed))
        return full[cfg.train.lr], 7
    import blast_ray.tune.rerank as rr

    monkeypatch.setattr(rr, "full_length_metric", fake_full_length_metric)
    out = {}
    chosen = qt.rerank("amazon-scientific", base, "blast", outcome, 2, out)
    assert [c[0] for c in calls] == [0.01, 0.003] and {c[1] for c in calls} == {qt.BASE_SEED}  # top 2 distinct
    assert chosen["train.lr"] == 0.003 and chosen["train.model"] == "blast"  # the space's fixed keys too
    assert out["amazon-scientific.blast.rerank.chosen"] == 2 and out["amazon-scientific.blast.rerank_valid"] == 0.279
    assert out["amazon-scientific.blast.rerank.1.tune_valid"] == 0.26
    assert qt.rerank("amazon-scientific", base, "blast", outcome, 1, {}) is None  # 1: the tune's own choice
    # a simpler model's point that ASHA cut early (low capped figure) is re-ranked all the same
    calls.clear()
    out = {}
    chosen = qt.rerank("amazon-scientific", base, "blast", outcome, 2, out, [{"train.lr": 0.001}])
    assert [c[0] for c in calls] == [0.01, 0.003, 0.001] and chosen["train.n_layers_uu"] == 2
    assert out["amazon-scientific.blast.rerank.chosen"] == 3 and out["amazon-scientific.blast.rerank.3.tune_valid"] == 0.2
    # the guaranteed points of BLAST: LightGCN's start point 1 and FREEDOM's point
    pts = qt.guaranteed_points("blast", load_config(ML100K), {"train.lr": 0.01, "train.n_layers_ui": 2},
                               {"freedom": freedom})
    assert len(pts) == 2 and pts[0]["train.n_layers_ii"] == 0 and pts[1]["train.n_layers_ii"] == 1
    assert pts[0]["train.lr"] == 0.01 and pts[1]["train.lr"] == 0.003


def test_from_chosen_adds_seeds_to_the_stored_choices_without_tuning(monkeypatch, tmp_path):
    """``--from-chosen``: a dataset whose tune store is gone gets more seeds at the configurations its
    earlier run chose on validation (read from the stored keys), tuning nothing; the tune and re-rank
    figures are kept, the seeded figures and the comparison are redone, another tune budget is refused."""
    import argparse
    import json

    import numpy as np

    qt = _qt()
    ds = "amazon-baby"
    bpr = {"augment.enabled": False, "train.l2_weight": 0.0, "train.lr": 0.002, "train.model": "bpr"}
    blast = {**FIRST_BLAST, "train.lr": 0.004}
    stored = {"machine": "m", f"{ds}.trials_per_model": 3, f"{ds}.max_epochs_per_trial": 10,
              f"{ds}.seeds": [2024, 2025], f"{ds}.seed_max_epochs": 30, f"{ds}.rerank": 2, f"{ds}.seconds": 1500.0,
              f"{ds}.bpr.chosen": json.dumps(bpr), f"{ds}.blast.chosen": json.dumps(blast),
              f"{ds}.bpr.tune_valid": 0.05, f"{ds}.blast.rerank_valid": 0.075, f"{ds}.blast.keeps.item_graph": True,
              f"{ds}.bpr.test.recall@20.mean": 0.9, f"{ds}.bpr.seeds": 2, f"{ds}.blast_vs_best_baseline": 0.5,
              "ml-100k.blast.test.recall@20.mean": 0.36}
    args = argparse.Namespace(datasets=[ds], models=["bpr", "blast"], trials=3, max_epochs=10, seeds=3,
                              seed_max_epochs=30, rerank=2, from_chosen=True, ablations=False, sensitivity=False,
                              ot_lift=False, store=str(tmp_path / "store"), json=str(tmp_path / "q.json"),
                              md=str(tmp_path / "q.md"))
    out = qt.merge_previous(stored, args)
    assert out[f"{ds}.bpr.tune_valid"] == 0.05 and out[f"{ds}.blast.keeps.item_graph"]
    assert f"{ds}.bpr.test.recall@20.mean" not in out and f"{ds}.blast_vs_best_baseline" not in out
    assert out["ml-100k.blast.test.recall@20.mean"] == 0.36

    def no_tune(*a, **k):
        raise AssertionError("--from-chosen must not tune")

    users = np.arange(4)
    calls = []

    def fake_seed_run(base, values, seed, tag):  # the training itself: tests/test_tune.py, test_pipeline
        calls.append((values["train.model"], values["train.lr"], seed, base.train.epochs))
        r = 0.07 if values["train.model"] == "blast" else 0.05
        per = np.array([r, r + 0.01, r - 0.01, r + 0.02])
        return {"test.recall@20": r + (seed - 2024) * 1e-4, "valid.recall@20": r}, users, per, {}

    monkeypatch.setattr(qt, "tune_model", no_tune)
    monkeypatch.setattr(qt, "seed_run", fake_seed_run)
    qt.run_dataset(ds, args, out, [])
    assert calls == [(m, v["train.lr"], s, 30) for m, v in (("bpr", bpr), ("blast", blast)) for s in (2024, 2025, 2026)]
    assert out[f"{ds}.seeds"] == [2024, 2025, 2026] and out[f"{ds}.blast.seeds"] == 3
    assert out[f"{ds}.best_baseline"] == "bpr" and out[f"{ds}.blast_vs_best_baseline"] == pytest.approx(0.0701 / 0.0501 - 1, abs=1e-4)
    assert out[f"{ds}.seconds"] == 1500.0 and f"{ds}.reseed_seconds" in out
    assert "`--from-chosen`" in Path(args.md).read_text()
    # every (model, seed) is recorded as it finishes: a re-run (here: on another machine, the store
    # gone) trains only what is missing and pairs the same per-user values
    assert out[f"{ds}.blast.seed2026.test.recall@20"] == pytest.approx(0.0702)
    assert (tmp_path / "per_user" / f"{ds}.blast.npz").exists()
    figures = {k: v for k, v in out.items() if ".test." in k or "vs_best" in k}
    stored_now = json.loads(Path(args.json).read_text())
    del stored_now[f"{ds}.bpr.seed2026.config_id"]  # as if that run had not finished
    calls.clear()
    again = qt.merge_previous(stored_now, argparse.Namespace(**{**vars(args), "seeds": 3}))
    assert f"{ds}.blast.seed2025.test.recall@20" in again and f"{ds}.blast.test.recall@20.mean" not in again
    qt.run_dataset(ds, args, again, [])
    assert calls == [("bpr", bpr["train.lr"], 2026, 30)]
    assert {k: v for k, v in again.items() if ".test." in k or "vs_best" in k} == figures
    # a record of other values is not used
    other = {**bpr, "train.lr": 0.01}
    assert qt.load_seed_record(args, again, ds, "bpr", other, 2024) is None
    assert qt.load_seed_record(args, again, ds, "bpr", bpr, 2024)[0]["test.recall@20"] == pytest.approx(0.05)
    with pytest.raises(SystemExit, match="tuned with"):
        qt.merge_previous(stored, argparse.Namespace(**{**vars(args), "trials": 5}))
    with pytest.raises(SystemExit, match="amazon-baby.freedom.chosen is not in"):
        qt.stored_choice(out, ds, "freedom")
