"""Quality tables (issue #13 item 3): every model tuned with the same budget on VALIDATION, the chosen
configurations re-trained with several seeds, test metrics read once per (model, seed), a paired
per-user Wilcoxon test of BLAST against the best baseline, the paper's Table 4 ablations and
Fig. 3-style sensitivity.

Usage (real data only; the ml-100k files come from `blast datasets get ml-100k`):

    python benchmarks/quality_tables.py --datasets ml-100k --trials 12 --max-epochs 40 --seeds 5 \
        --store blast-data/quality --json benchmarks/results/quality.json --md docs/RESULTS.md

Per dataset:
1. ``blast tune`` (:func:`blast_ray.tune.run_tune`, ``final=False``: no test metric) of every model
   in ``--models`` except pop, each with ``--trials`` trials of at most ``--max-epochs`` epochs
   (ASHA), the same budget for every model; the experiment is resumed when it exists already.
   Staged search (``START_FROM``): BLAST's tune starts from LightGCN's chosen values (its first
   trial is LightGCN + BPR inside BLAST's space at LightGCN's lr / l2_weight / n_layers_ui, its
   second the config's BLAST parts on top), so on validation it can always fall back to LightGCN.
2. The chosen configuration of each model trained with seeds ``train.seed = 2024 + s`` (the split,
   ``etl.seed``, is the config's and the same for every run, so per-user results pair up); each run
   selects its epoch on validation (``evaluate.select_metric``) and reads test once. ``pop`` has no
   seed (it is deterministic).
3. Per-user test Recall@20 of every model (averaged over seeds), the Wilcoxon signed-rank test of
   BLAST against the baseline with the best mean test Recall@20 (two-sided).
4. ``--ablations``: BLAST's chosen configuration without text profiles (no profiles/features stages:
   item graph from co-occurrence, no user graph), without the false-negative restriction, without the
   user graph, without OT pairs (``augment.ratio = 0``); the same seeds. An ablation that changes
   nothing (the chosen configuration does not use the part) is not re-trained and says so; a row
   whose results equal another model's (the same computation) says that too.
5. ``--sensitivity``: one seed each, BLAST's chosen configuration with one knob changed: the OT ratio
   r, the marginals (row/col target), n_layers_ii, n_layers_uu. Valid and test are both reported;
   nothing is chosen from these figures.
6. ``--ot-lift``: each backbone (bpr, lightgcn, freedom) at its chosen configuration with BLAST's OT
   augmentation switched on (BLAST's chosen eps/ratio/restriction), same seeds: the paper's Table 3.

Writes flat keys to ``--json`` (``<dataset>.<model>.test.recall@20.mean``, ``...std``,
``<dataset>.blast_vs_best_baseline``, ``<dataset>.blast_vs_best_baseline.p``, ...) and the tables to
``--md``; prints ``RESULT {json}`` last. Machine and seeds are recorded in both. Each seeded run is
recorded as it finishes (``<dataset>.<model>.seed<seed>.*`` keys, per-user figures in
``per_user/<dataset>.<model>.npz`` next to ``--json``), so an interrupted run resumes at the next
(model, seed), on any machine. ``--from-chosen`` tunes nothing: it trains the seeds of the
configurations a stored run chose (for a dataset whose tune store is gone).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "ml-100k": "configs/ml-100k.yaml",
    "amazon-scientific": "configs/amazon-scientific.yaml",
    "amazon-baby": "configs/amazon-baby.yaml",
    "amazon-sports": "configs/amazon-sports.yaml",
}
MODELS = ("pop", "bpr", "lightgcn", "freedom", "blast")
REPORTED = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
BASE_SEED = 2024
log = logging.getLogger("quality_tables")


# ---- one training run ------------------------------------------------------------------------------

def _stage_output(store, dataset: str, stage: str, manifest: dict[str, Any]):
    from blast_ray.store import StageOutput

    return StageOutput(store, dataset, stage, manifest["fingerprint"], manifest.get("config"), manifest.get("inputs", {}))


def per_user_test(store, cfg, manifests: dict[str, dict[str, Any]], k: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(test users, their Recall@k) of the run's trained model: the evaluate stage's protocol per user."""
    import torch

    from blast_ray.etl.artifacts import load_interactions
    from blast_ray.report.analysis import per_user_metrics
    from blast_ray.train.artifacts import load_embeddings

    data = load_interactions(_stage_output(store, cfg.dataset.name, "etl", manifests["etl"]))
    h_u, f_i = load_embeddings(_stage_output(store, cfg.dataset.name, "train", manifests["train"]))
    users, per = per_user_metrics(torch.from_numpy(h_u), torch.from_numpy(f_i), data, "test", k)
    return users, per[f"recall@{k}"]


def pop_run(base) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Test metrics and per-user Recall@20 of the popularity ranking (deterministic: no seed)."""
    from blast_ray.etl.artifacts import load_interactions
    from blast_ray.pipeline import run_pipeline
    from blast_ray.ranking.scoring import score_split
    from blast_ray.report.analysis import per_user_metrics, popularity_model
    from blast_ray.store import ArtifactStore

    res = run_pipeline(base, stages=("etl",), run_id="quality-pop")
    if not res.ok:
        raise RuntimeError(f"etl failed: {res.error}")
    store = ArtifactStore(base.store)
    data = load_interactions(_stage_output(store, base.dataset.name, "etl", res.manifests["etl"]))
    h_u, f_i = popularity_model(data.train)
    ks = tuple(sorted({int(m.split("@")[1]) for m in REPORTED}))
    test = score_split(h_u, f_i, data, "test", ks, 2048)
    valid = score_split(h_u, f_i, data, "valid", ks, 2048)
    users, per = per_user_metrics(h_u, f_i, data, "test", 20)
    metrics = {**{f"test.{k}": float(v) for k, v in test.items()}, **{f"valid.{k}": float(v) for k, v in valid.items()}}
    return metrics, users, per["recall@20"]


def pipeline_run(base, values: dict[str, Any], seed: int, tag: str, last: tuple[str, ...]):
    """``base`` + ``values`` with ``train.seed = seed`` (no extra baselines, no progress bar) run
    through its upstream stages (cached by fingerprint) and ``last``: (the config, the result)."""
    from blast_ray.pipeline import run_pipeline
    from blast_ray.tune.runner import config_with, upstream_stages

    cfg = config_with(base, {**values, "train.seed": seed, "evaluate.baselines": []})
    cfg.train.progress = False
    res = run_pipeline(cfg, stages=(*upstream_stages(cfg), *last), run_id=f"quality-{tag}-s{seed}")
    if not res.ok:
        raise RuntimeError(f"{tag} seed {seed}: {res.error}")
    return cfg, res


def seed_run(base, values: dict[str, Any], seed: int, tag: str) -> tuple[dict[str, float], np.ndarray, np.ndarray, dict]:
    """Train ``base`` + ``values`` with ``train.seed = seed`` through the pipeline (upstream stages
    cached by fingerprint) up to evaluate: (valid/test metrics, test users, per-user Recall@20, train extra)."""
    from blast_ray.store import ArtifactStore

    cfg, res = pipeline_run(base, values, seed, tag, ("train", "evaluate"))
    metrics = {k: float(v) for k, v in res.metrics().items() if isinstance(v, (int, float))}
    users, per = per_user_test(ArtifactStore(cfg.store), cfg, res.manifests)
    return metrics, users, per, res.manifests["train"].get("extra", {})


# ---- aggregation -------------------------------------------------------------------------------------

def summarize(runs: list[dict[str, float]], prefix: str, out: dict[str, Any]) -> None:
    """mean/std over seeds of the reported test metrics (and valid recall@20) into flat keys."""
    for split, names in (("test", REPORTED), ("valid", ("recall@20",))):
        for m in names:
            vals = [r[f"{split}.{m}"] for r in runs if f"{split}.{m}" in r]
            if vals:
                out[f"{prefix}.{split}.{m}.mean"] = round(float(np.mean(vals)), 5)
                out[f"{prefix}.{split}.{m}.std"] = round(float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, 5)
    out[f"{prefix}.seeds"] = len(runs)


def paired_test(users_a: np.ndarray, a: np.ndarray, users_b: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Two-sided Wilcoxon signed-rank p-value of per-user a vs b (users must be the same set) and n."""
    from scipy.stats import wilcoxon

    if not np.array_equal(users_a, users_b):
        raise ValueError("per-user results of different user sets cannot be paired")
    d = a - b
    if not np.any(d != 0):
        return 1.0, len(d)
    return float(wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue), len(d)


# ---- the driver ----------------------------------------------------------------------------------------

# Staged search: a model's tune starts from the chosen values of the simpler model its space extends
# (the keys both spaces tune), so validation can always fall back to that model at ITS tuned values.
START_FROM = {"blast": "lightgcn"}
# Further simpler models a space holds exactly, each evaluated as one point of it (their chosen
# values, the rest of the parts off): BLAST without its user branch and OT is FREEDOM's computation.
ALSO_FROM = {"blast": ("freedom",)}
# What the item graph of FREEDOM / BLAST is built from where the dataset has no item text (the
# graphs stage's fallback, tests/test_graphs.py): said under the dataset's table.
ITEM_GRAPH_NOTE = {
    "amazon-baby": "No item text in the shared data: the template profiles are one sentence for every item and "
                   "user, so FREEDOM's and BLAST's item graph is the co-occurrence kNN (graphs stage fallback, "
                   "reason in its manifest) and there is no user graph.",
    "amazon-sports": "No item text in the shared data: FREEDOM's and BLAST's item graph is the co-occurrence kNN "
                     "(graphs stage fallback) and there is no user graph.",
}


def tune_model(config_path: Path, dataset: str, model: str, args,
               start_values: dict[str, Any] | None = None,
               also_from: dict[str, dict[str, Any]] | None = None) -> tuple[dict[str, Any], float, str, dict]:
    """Chosen values of ``model``'s space on ``dataset`` (validation only), the seconds it took, the
    experiment name and which parts the choice keeps. ``start_values``: the simpler model's chosen
    values (staged search, :func:`blast_ray.tune.runner.start_points`); ``also_from``: further
    simpler models' chosen values, one point each; all count against the budget."""
    import ray.tune as tune

    from blast_ray.store import ArtifactStore, layout
    from blast_ray.tune.runner import TuneOptions, run_tune

    staged = "-staged" if start_values else ""
    also = "".join(f"-{m}" for m in (also_from or {}))
    name = f"quality-{model}{staged}{also}-t{args.trials}-e{args.max_epochs}"
    exp = os.path.join(ArtifactStore(args.store).path(*layout.tune_parts(dataset)), name)
    opts = TuneOptions(trials=args.trials, max_epochs=args.max_epochs, final=False, name=name,
                       resume=tune.Tuner.can_restore(exp), cpus_per_trial=args.cpus_per_trial,
                       max_concurrent=args.max_concurrent, start_values=dict(start_values or {}),
                       also_from=tuple(dict(v) for v in (also_from or {}).values()))
    t0 = time.time()
    o = run_tune(config_path, ROOT / "configs" / "spaces" / f"{model}.yaml", opts, store=args.store)
    return {**_space_fixed(model), **o.best_values}, time.time() - t0, o.experiment, o.kept, o


def record_tune(out: dict[str, Any], prefix: str, outcome, n_start_points: int) -> None:
    """Validation figures of a tune into flat keys: the chosen trial's best valid metric and, for a
    staged search, each start point's (trial 1 = the simpler model at its tuned values, trial 2 =
    the config's parts on top): what the choice was made on, for the tables' explanation."""
    out[f"{prefix}.tune_valid"] = round(float(outcome.best_metric), 5)
    rows = sorted(outcome.trials, key=lambda t: str(t["trial_id"]))
    for i, row in enumerate(rows[:n_start_points], 1):
        v = row.get(outcome.metric)
        if v is not None:
            out[f"{prefix}.start_point{i}.valid"] = round(float(v), 5)


def rerank(dataset: str, base, model: str, outcome, n: int, out: dict[str, Any],
           guaranteed: list[dict[str, Any]] = ()) -> dict[str, Any] | None:
    """``blast_ray.tune.rerank`` on ``model``'s tune: its top ``n`` trials and the ``guaranteed``
    points (the simpler models inside this space) re-trained for the config's epochs (the
    ``--seed-max-epochs`` cap, seed BASE_SEED), validation only; the best on VALIDATION is the
    choice (the module doc says why). Flat keys ``<dataset>.<model>.rerank.<i>.{tune,full}_valid``.
    None when ``n`` < 2 (the tune's choice)."""
    from blast_ray.tune.rerank import candidates, rerank_full_length
    from blast_ray.tune.runner import config_with

    if n < 2:
        return None
    fixed = _space_fixed(model)
    cands = candidates(outcome.trials, outcome.metric, n, guaranteed)
    scored, best = rerank_full_length(config_with(base, {**fixed, "train.seed": BASE_SEED}), cands, outcome.metric,
                                      f"quality-{dataset}-{model}-rerank")
    prefix = f"{dataset}.{model}.rerank"
    for i, c in enumerate(scored, 1):
        if c.tune_metric is not None:
            out[f"{prefix}.{i}.tune_valid"] = round(c.tune_metric, 5)
        out[f"{prefix}.{i}.full_valid"] = round(c.full_metric, 5)
    out[f"{prefix}.chosen"] = best + 1
    out[f"{dataset}.{model}.rerank_valid"] = round(scored[best].full_metric, 5)
    return {**fixed, **scored[best].values}


def guaranteed_points(model: str, base, start: dict[str, Any] | None, also: dict[str, dict[str, Any]]) -> list[dict]:
    """The points of ``model``'s space that are its simpler models at their chosen values (the
    staged search's start point 1 and the ``also_from`` points): always re-ranked at full length."""
    from blast_ray.tune import rerank as rr
    from blast_ray.tune.runner import config_with
    from blast_ray.tune.space import load_space

    space = load_space(ROOT / "configs" / "spaces" / f"{model}.yaml")
    return rr.guaranteed_points(space, config_with(base, space.fixed), dict(start or {}), list(also.values()))


def _space_fixed(model: str) -> dict[str, Any]:
    from blast_ray.tune.space import load_space

    return dict(load_space(ROOT / "configs" / "spaces" / f"{model}.yaml").fixed)


def run_dataset(dataset: str, args, out: dict[str, Any], md: list[str]) -> None:
    from blast_ray.config import load_config

    t_dataset = time.time()
    config_path = ROOT / CONFIGS[dataset]
    base = load_config(config_path)
    base.store = args.store
    if args.seed_max_epochs:  # every seeded, re-rank, ablation, sensitivity and OT-lift run (not the tune's trials)
        from blast_ray.tune.runner import config_with

        base = config_with(base, {"train.epochs": min(base.train.epochs, args.seed_max_epochs)})
    seeds = [BASE_SEED + s for s in range(args.seeds)]
    out.update(budget_keys(dataset, args))
    chosen: dict[str, dict[str, Any]] = {}
    tuned: dict[str, dict[str, Any]] = {}  # the tuned keys only (start values of a staged search)
    per_user: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    runs: dict[str, list[dict[str, float]]] = {}
    for model in args.models:
        t0 = time.time()
        if model == "pop":
            m, users, per = pop_run(base)
            runs[model] = [m]
            per_user[model] = (users, per)
        elif args.from_chosen:
            chosen[model] = stored_choice(out, dataset, model)
        else:
            simpler = START_FROM.get(model)
            start = tuned.get(simpler) if simpler else None
            if simpler and start is None:
                log.warning("%s: %s is not tuned in this run: %s's search starts from its fallback point only "
                            "(no staged search)", dataset, simpler, model)
            also = {m: tuned[m] for m in ALSO_FROM.get(model, ()) if m in tuned}
            values, tune_s, exp, kept, outcome = tune_model(config_path, dataset, model, args, start, also)
            if also:
                out[f"{dataset}.{model}.search_also_from"] = ",".join(also)
            t_rerank = time.time()
            reranked = rerank(dataset, base, model, outcome, args.rerank, out,
                              guaranteed_points(model, base, start, also))
            if reranked is not None:
                from blast_ray.tune.runner import config_with, kept_components

                values = reranked
                kept = kept_components(config_with(base, values))
                out[f"{dataset}.{model}.rerank_seconds"] = round(time.time() - t_rerank, 1)
            if model == "blast" and not outcome.restored:
                # BLAST with every part off is LightGCN exactly (a 0-layer graph branch is off) for
                # trials run by this code; a tune restored from an older experiment keeps whatever
                # the earlier run recorded (absent: its trials may predate that model fix).
                out[f"{dataset}.blast_fallback_is_exact"] = True
            record_tune(out, f"{dataset}.{model}", outcome, 2 if start else 0)
            chosen[model] = values
            tuned[model] = {k: v for k, v in values.items() if k not in _space_fixed(model)}
            out[f"{dataset}.{model}.chosen"] = json.dumps(values, sort_keys=True)
            if start:
                out[f"{dataset}.{model}.search_started_from"] = simpler
            out[f"{dataset}.{model}.tune_seconds"] = round(tune_s, 1)  # this call's wall time (a restore: ~0)
            out[f"{dataset}.{model}.tune_trial_seconds"] = round(sum(t.get("seconds") or 0.0 for t in outcome.trials), 1)
            out[f"{dataset}.{model}.tune_experiment"] = exp
            if model == "blast":
                for part, keep in kept.items():
                    out[f"{dataset}.blast.keeps.{part}"] = bool(keep)
        if model != "pop":
            rs, pers, users = _seeded(dataset, base, model, chosen[model], seeds, args, out)
            runs[model] = rs
            per_user[model] = (users, np.mean(pers, axis=0))
        summarize(runs[model], f"{dataset}.{model}", out)
        out[f"{dataset}.{model}.{'reseed_seconds' if args.from_chosen else 'seconds'}"] = round(time.time() - t0, 1)
        _write(args, out, md_tables(out, args, dataset_done=False))

    if "blast" in runs:
        baselines = [m for m in runs if m != "blast"]
        best = max(baselines, key=lambda m: out[f"{dataset}.{m}.test.recall@20.mean"]) if baselines else None
        if best:
            b_mean = out[f"{dataset}.blast.test.recall@20.mean"]
            o_mean = out[f"{dataset}.{best}.test.recall@20.mean"]
            p, n = paired_test(*per_user["blast"], *per_user[best])
            out[f"{dataset}.best_baseline"] = best
            out[f"{dataset}.blast_vs_best_baseline"] = round(b_mean / o_mean - 1, 4)
            out[f"{dataset}.blast_vs_best_baseline.p"] = p
            out[f"{dataset}.blast_vs_best_baseline.n_users"] = n
        if args.ablations:
            ablations(dataset, base, chosen["blast"], seeds, out)
        if args.sensitivity:
            sensitivity(dataset, base, chosen["blast"], seeds[0], out)
        if args.ot_lift:
            ot_lift(dataset, base, chosen, seeds, out)
    if args.from_chosen:  # the tune's run keeps its wall time; this run's is the seeded runs' alone
        out[f"{dataset}.reseed_seconds"] = round(time.time() - t_dataset, 1)
    else:
        out[f"{dataset}.seconds"] = round(time.time() - t_dataset, 1)
    _write(args, out, md_tables(out, args, dataset_done=True))


def _seeded(dataset: str, base, model: str, values: dict[str, Any], seeds: list[int], args, out: dict[str, Any]):
    """``model`` at ``values`` trained once per seed: (metrics per seed, per-user Recall@20 per seed, test
    users). A (model, seed) whose record is stored for these values (:func:`load_seed_record`) is not
    trained again; each new run is recorded as soon as it finishes, so an interrupted run, or one
    continued on another machine, resumes at the next (model, seed)."""
    rs, pers, users = [], [], None
    for s in seeds:
        rec = load_seed_record(args, out, dataset, model, values, s)
        if rec is not None:
            m, users, per = rec
            log.info("%s %s seed %d: recorded by an earlier run (test recall@20 %.4f)", dataset, model, s,
                     m.get("test.recall@20", float("nan")))
        else:
            m, users, per, extra = seed_run(base, values, s, f"{dataset}-{model}")
            per = np.asarray(per, dtype=np.float32)  # what is stored, so a resumed test pairs the same values
            save_seed_record(args, out, dataset, model, values, s, m, users, per)
            log.info("%s %s seed %d: test recall@20 %.4f (best epoch %s)", dataset, model, s,
                     m.get("test.recall@20", float("nan")), extra.get("metrics", {}).get("best_epoch"))
        rs.append(m)
        pers.append(per)
    return rs, pers, users


# Per-(model, seed) records: flat keys ``<dataset>.<model>.seed<seed>.<split>.<metric>`` in --json with
# ``...config_id`` (a hash of the trained values), and the per-user test Recall@20 (float32) in
# ``<dir of --json>/per_user/<dataset>.<model>.npz`` (``users`` and one ``s<seed>`` array per seed).
RECORDED = [f"test.{m}" for m in REPORTED] + ["valid.recall@20"]
_SEED_KEY = re.compile(r"\.seed\d+\.")


def config_id(values: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def per_user_path(args, dataset: str, model: str) -> Path:
    return Path(args.json).parent / "per_user" / f"{dataset}.{model}.npz"


def load_seed_record(args, out: dict[str, Any], dataset: str, model: str, values: dict[str, Any], seed: int):
    """(metrics, test users, per-user Recall@20) of ``model`` at ``values`` with ``seed`` as stored by
    an earlier run, or None (not stored, or stored for other values)."""
    pre = f"{dataset}.{model}.seed{seed}"
    path = per_user_path(args, dataset, model)
    if out.get(f"{pre}.config_id") != config_id(values) or not path.exists():
        return None
    with np.load(path) as z:
        if f"s{seed}" not in z.files:
            return None
        users, per = z["users"], z[f"s{seed}"]
    metrics = {k: out[f"{pre}.{k}"] for k in RECORDED if f"{pre}.{k}" in out}
    return metrics, users, per


def save_seed_record(args, out: dict[str, Any], dataset: str, model: str, values: dict[str, Any], seed: int,
                     metrics: dict[str, float], users: np.ndarray, per: np.ndarray) -> None:
    """Store one seeded run now: its flat keys in ``out`` (and --json), its per-user array in the npz."""
    pre = f"{dataset}.{model}.seed{seed}"
    path = per_user_path(args, dataset, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path) as z:
            if np.array_equal(z["users"], users):  # another split's records cannot be paired with these
                arrays = {k: z[k] for k in z.files}
    arrays.update({"users": np.asarray(users), f"s{seed}": np.asarray(per, dtype=np.float32)})
    np.savez_compressed(path, **arrays)
    out.update({f"{pre}.{k}": float(metrics[k]) for k in RECORDED if k in metrics})
    out[f"{pre}.config_id"] = config_id(values)
    _write(args, out, md_tables(out, args, dataset_done=False))


def stored_choice(out: dict[str, Any], dataset: str, model: str) -> dict[str, Any]:
    """The configuration an earlier run of this benchmark chose for ``model`` on ``dataset`` (on
    validation: its tune and re-rank), from the stored flat keys (``--from-chosen``)."""
    key = f"{dataset}.{model}.chosen"
    if key not in out:
        raise SystemExit(f"--from-chosen: {key} is not in the stored figures; run {dataset} without --from-chosen "
                         f"first (it tunes {model})")
    return json.loads(out[key])


def budget_keys(dataset: str, args) -> dict[str, Any]:
    """The budget a dataset's figures were made with (datasets may differ: Baby and Sports get the
    budget that fits this machine, said so in the tables)."""
    return {f"{dataset}.trials_per_model": args.trials, f"{dataset}.max_epochs_per_trial": args.max_epochs,
            f"{dataset}.seeds": [BASE_SEED + s for s in range(args.seeds)],
            f"{dataset}.seed_max_epochs": args.seed_max_epochs, f"{dataset}.rerank": args.rerank}


def dataset_budget(out: dict[str, Any], ds: str) -> tuple[int, int, list[int], int, int]:
    """(trials per model, epochs per trial, seeds, seeded-run epoch cap or 0, trials re-ranked at
    full length or 0) of ``ds``; runs from before per-dataset budgets carry the file-wide keys."""
    return (out.get(f"{ds}.trials_per_model", out.get("trials_per_model")),
            out.get(f"{ds}.max_epochs_per_trial", out.get("max_epochs_per_trial")),
            out.get(f"{ds}.seeds", out.get("seeds")), out.get(f"{ds}.seed_max_epochs", 0),
            out.get(f"{ds}.rerank", 0))


def _variant_runs(dataset: str, base, values: dict[str, Any], seeds: list[int], tag: str, prefix: str, out) -> None:
    rs = [seed_run(base, values, s, f"{dataset}-{tag}")[0] for s in seeds]
    summarize(rs, prefix, out)


ABLATIONS = {
    # Table 4 of the paper: each removes one part of BLAST from its chosen configuration.
    "wo_text": {"stages": ["etl", "graphs", "augment", "train", "evaluate", "recommend", "report"]},
    "wo_fn_restriction": {"augment.restrict_negatives": False},
    "wo_user_graph": {"graphs.user_graph": False},
    "wo_ot": {"augment.ratio": 0.0},
}


def ablation_config(base, values: dict[str, Any], name: str):
    """BLAST's chosen configuration (``base`` + ``values``) minus the part ``name`` removes."""
    from blast_ray.tune.runner import config_with

    change = ABLATIONS[name]
    if "stages" in change:  # no profiles/features: a top-level key, not a dotted one
        cfg = config_with(base, values)
        cfg.stages = tuple(change["stages"])
        return config_with(cfg, {})
    return config_with(base, {**values, **change})


def effective_training(cfg) -> dict[str, Any]:
    """What a run of ``cfg`` trains on, as a plain dict: the config without the parts that cannot
    change the trained model (augment off, or on with ratio 0 and no restriction, is no augment;
    the seed-independent store, recommend and report sections are dropped)."""
    d = cfg.to_dict()
    for k in ("store", "recommend"):
        d.pop(k, None)
    a = d["augment"]
    if not a["enabled"] or (float(a["ratio"]) == 0 and not a["restrict_negatives"]):
        d["augment"] = {"enabled": False}
    d["stages"] = [s for s in d["stages"] if s not in ("recommend", "report")]
    return d


def ablation_plan(base, values: dict[str, Any]) -> dict[str, Any]:
    """Per ablation: its config, or None when removing the part changes nothing because BLAST's
    chosen configuration does not use it (the row then equals full BLAST by construction and is
    not re-trained; the table says so instead of printing copied numbers)."""
    from blast_ray.tune.runner import config_with

    full = effective_training(config_with(base, values))
    plan = {}
    for name in ABLATIONS:
        cfg = ablation_config(base, values, name)
        plan[name] = None if effective_training(cfg) == full else cfg
    return plan


def ablations(dataset: str, base, values: dict[str, Any], seeds: list[int], out: dict[str, Any]) -> None:
    for name, cfg in ablation_plan(base, values).items():
        prefix = f"{dataset}.ablation.{name}"
        if cfg is None:
            out[f"{prefix}.noop"] = True
            log.info("%s ablation %s: BLAST's chosen configuration does not use this part: not re-trained", dataset, name)
            continue
        out.pop(f"{prefix}.noop", None)
        # the variant's config already holds the chosen values and the change: apply no dotted values
        _variant_runs(dataset, cfg, {}, seeds, f"ablation-{name}", prefix, out)


def identical_to(out: dict[str, Any], ds: str, prefix: str) -> str | None:
    """The model whose test metrics (every reported mean and std over seeds) equal those under
    ``prefix``: such rows are the same computation (e.g. BLAST without its user branch at the values
    FREEDOM chose is FREEDOM's model), never silently shown as if they were independent results."""
    keys = [f"test.{m}.{s}" for m in REPORTED for s in ("mean", "std")]
    mine = [out.get(f"{prefix}.{k}") for k in keys]
    if any(v is None for v in mine):
        return None
    for mo in MODELS:
        if f"{ds}.{mo}" != prefix and [out.get(f"{ds}.{mo}.{k}") for k in keys] == mine:
            return mo
    return None


SENSITIVITY = {
    "augment.ratio": [0.0, 0.05, 0.1, 0.2, 0.5],
    # the constant marginals (means, uniform) differ only by a scale: the same H (augment/sinkhorn.py,
    # tested); only the per-user / per-item targets change which pairs H holds (the paper's Fig. 3c)
    "augment.row_target": ["mean_activity", "activity"],
    "augment.col_target": ["mean_popularity", "popularity"],
    "train.n_layers_ii": [0, 1, 2, 3, 5],
    "train.n_layers_uu": [0, 1, 2],
}


# A knob that only acts with another part on: the user-graph layers need the user graph (a choice
# that dropped it would otherwise show the same figure for every n_layers_uu).
SENSITIVITY_NEEDS = {"train.n_layers_uu": lambda v, chosen: {"graphs.user_graph": True} if v else {},
                     # the marginals act through OT pairs only: at the chosen ratio, or 0.1 if it is 0
                     "augment.row_target": lambda v, chosen: {"augment.ratio": chosen.get("augment.ratio") or 0.1},
                     "augment.col_target": lambda v, chosen: {"augment.ratio": chosen.get("augment.ratio") or 0.1}}


def sensitivity(dataset: str, base, values: dict[str, Any], seed: int, out: dict[str, Any]) -> None:
    for key, grid in SENSITIVITY.items():
        for v in grid:
            needs = SENSITIVITY_NEEDS.get(key, lambda _v, _c: {})(v, values)
            m = seed_run(base, {**values, key: v, **needs}, seed, f"sens-{key}-{v}")[0]
            for split in ("valid", "test"):
                out[f"{dataset}.sensitivity.{key}={v}.{split}.recall@20"] = round(m[f"{split}.recall@20"], 5)


def ot_lift(dataset: str, base, chosen: dict[str, dict[str, Any]], seeds: list[int], out: dict[str, Any]) -> None:
    ot = {k: v for k, v in chosen.get("blast", {}).items() if k.startswith("augment.")}
    ot.update({"augment.enabled": True})
    if not ot.get("augment.ratio"):
        ot["augment.ratio"] = 0.1  # BLAST's choice dropped OT; the lift is measured at the default ratio
    for model in ("bpr", "lightgcn", "freedom"):
        if model not in chosen:
            continue
        prefix = f"{dataset}.ot_lift.{model}"
        _variant_runs(dataset, base, {**chosen[model], **ot}, seeds, f"otlift-{model}", prefix, out)
        plain = out.get(f"{dataset}.{model}.test.recall@20.mean")
        if plain:
            out[f"{prefix}.relative"] = round(out[f"{prefix}.test.recall@20.mean"] / plain - 1, 4)


# ---- output ------------------------------------------------------------------------------------------------

def _fmt(out: dict[str, Any], key: str) -> str:
    m, s = out.get(f"{key}.mean"), out.get(f"{key}.std")
    return "" if m is None else f"{m:.4f} ± {s:.4f}"


def md_tables(out: dict[str, Any], args, dataset_done: bool) -> str:
    lines = ["# Quality results", "",
             "Written by `benchmarks/quality_tables.py` (do not edit by hand). Every configuration was chosen "
             "on the VALIDATION split by `blast tune`; test metrics were read once per (model, seed) at the "
             "epoch chosen on validation.", "",
             f"- machine: {out['machine']}", "- tune budget per model: the same for every model of a dataset, "
             "stated under each dataset (Baby and Sports get the budget that fits this machine)",
             "- staged search: a model whose space extends a simpler one starts from that model's chosen values "
             "(BLAST from LightGCN's lr / l2_weight / n_layers_ui: trial 1 = BLAST's parts off, i.e. LightGCN + BPR "
             "inside BLAST's space; trial 2 = the config's BLAST parts on top; where stated, one more trial at "
             "FREEDOM's chosen values with the user branch and OT off, which is FREEDOM's computation), inside the "
             "same trial budget", ""]
    for ds in args.datasets:
        models = [m for m in MODELS if f"{ds}.{m}.test.recall@20.mean" in out]
        if not models:
            continue
        trials, max_epochs, seeds, cap, reranked = dataset_budget(out, ds)
        lines += [f"## {ds}", "", f"Budget: {trials} tune trials x <= {max_epochs} epochs (ASHA) per model, the same for "
                  f"every model; the chosen configurations trained with seeds {seeds}, "
                  + (f"each capped at {cap} epochs (the budget that fits this machine; early stopping on validation "
                     "within it)." if cap else "each for the config's epochs with early stopping on validation.")
                  + (f" The choice of every model: its tune's top {reranked} trials re-scored at full length on "
                     f"validation (seed {BASE_SEED}), the best of them (trials are cut at {max_epochs} epochs and "
                     "models converge at different speeds); BLAST's re-rank also holds the trials of its simpler "
                     "models' points (LightGCN's and FREEDOM's chosen values inside its space, whatever ASHA did to "
                     "them), so it can fall back to either at full length." if reranked else ""), "",
                  *([ITEM_GRAPH_NOTE[ds], ""] if ds in ITEM_GRAPH_NOTE else []),
                  "| metric | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
        for m in REPORTED:
            vals = {mo: out.get(f"{ds}.{mo}.test.{m}.mean") for mo in models}
            best = max((v for v in vals.values() if v is not None), default=None)
            cells = [(f"**{_fmt(out, f'{ds}.{mo}.test.{m}')}**" if vals[mo] == best else _fmt(out, f"{ds}.{mo}.test.{m}"))
                     for mo in models]
            lines.append(f"| test {m} | " + " | ".join(cells) + " |")
        lines.append("| tune seconds (sum of the trials' training times) | " + " | ".join(
            str(out.get(f"{ds}.{mo}.tune_trial_seconds", out.get(f"{ds}.{mo}.tune_seconds", "-"))) for mo in models) + " |")
        lines.append("| valid recall@20 of the chosen trial (tune) | " + " | ".join(
            f"{out[f'{ds}.{mo}.tune_valid']:.4f}" if f"{ds}.{mo}.tune_valid" in out else "-" for mo in models) + " |")
        if any(f"{ds}.{mo}.rerank_valid" in out for mo in models):
            lines.append("| valid recall@20 of the choice at full length (re-rank) | " + " | ".join(
                f"{out[f'{ds}.{mo}.rerank_valid']:.4f}" if f"{ds}.{mo}.rerank_valid" in out else "-" for mo in models)
                + " |")
        lines.append("")
        if f"{ds}.seconds" in out:
            run = "the run that tuned this dataset" if f"{ds}.reseed_seconds" in out else "the last run of this dataset"
            lines += [f"Wall time of {run} on this machine: {out[f'{ds}.seconds']:.0f} s (every tune, "
                      "the re-rank, the seeded runs, the ablations, sensitivity and OT lift; stage outputs and tune "
                      "trials of an earlier run with the same configuration are reused from the store, so a re-run that "
                      "only adds rows is short: the full cost is in docs/stages/tune.md).", ""]
            if f"{ds}.reseed_seconds" in out:
                lines += [f"The seeded runs above were trained by a later run (`--from-chosen`: the configurations that "
                          f"run chose on validation, read from this file, nothing re-tuned) in "
                          f"{out[f'{ds}.reseed_seconds']:.0f} s; the tune and re-rank figures are the first run's.", ""]
        else:
            lines += ["_Partial: this dataset's run had not finished when this file was written; models without a "
                      "column, the comparison and the ablations are missing._", ""]
        if f"{ds}.blast_vs_best_baseline" in out:
            rel, p = out[f"{ds}.blast_vs_best_baseline"], out[f"{ds}.blast_vs_best_baseline.p"]
            best = out[f"{ds}.best_baseline"]
            verdict = ("BLAST is ahead" if rel > 0 else "a tie" if rel == 0 else "**the baseline wins**")
            lines += [f"BLAST vs the best baseline ({best}): {rel:+.1%} test Recall@20 (means over seeds), "
                      f"Wilcoxon signed-rank p = {p:.3g} over {out[f'{ds}.blast_vs_best_baseline.n_users']} users: "
                      f"{verdict}.", ""]
            if out.get(f"{ds}.blast.search_started_from"):
                also = out.get(f"{ds}.blast.search_also_from")
                lines += [f"BLAST's search started from {out[f'{ds}.blast.search_started_from']}'s chosen values "
                          "(staged search)" + (f" and evaluated {also}'s chosen values as a point of BLAST's space "
                                               "(the parts it lacks off)" if also else "")
                          + f". Chosen values: `{out.get(f'{ds}.blast.chosen', '?')}`.", ""]
            kept = [k.rsplit(".", 1)[1] for k, v in out.items() if k.startswith(f"{ds}.blast.keeps.") and v]
            lines += [f"BLAST's chosen configuration keeps: {', '.join(kept) or 'nothing (it fell back to LightGCN + BPR)'}.", ""]
            if rel <= 0:
                lines += [why_blast_trails(out, ds, max_epochs), ""]
        abl = sorted({k[len(f"{ds}.ablation."):].split(".")[0] for k in out if k.startswith(f"{ds}.ablation.")})
        if abl:
            lines += ["| ablation (BLAST's chosen config minus one part) | test recall@20 | test ndcg@20 | note |",
                      "|---|---|---|---|",
                      f"| full BLAST | {_fmt(out, f'{ds}.blast.test.recall@20')} | {_fmt(out, f'{ds}.blast.test.ndcg@20')} | |"]
            for a in abl:
                pre = f"{ds}.ablation.{a}"
                if out.get(f"{pre}.noop"):
                    lines.append(f"| {a} | = full BLAST | = full BLAST | not re-trained: the chosen configuration does not use this part |")
                    continue
                same = identical_to(out, ds, pre)
                note = (f"identical to {same}'s runs (every mean and std): the same computation at the same values"
                        if same else "")
                lines.append(f"| {a} | {_fmt(out, f'{pre}.test.recall@20')} | {_fmt(out, f'{pre}.test.ndcg@20')} | {note} |")
            lines.append("")
        grid = {f"{key}={v}" for key, values in SENSITIVITY.items() for v in values}
        sens = [k for k in out if k.startswith(f"{ds}.sensitivity.") and k.endswith(".valid.recall@20")
                and k[len(f"{ds}.sensitivity."):-len(".valid.recall@20")] in grid]  # an older grid's points: not shown
        if sens:
            lines += ["| sensitivity (one seed) | valid recall@20 | test recall@20 |", "|---|---|---|"]
            for k in sens:
                knob = k[len(f"{ds}.sensitivity."):-len(".valid.recall@20")]
                lines.append(f"| {knob} | {out[k]:.4f} | {out[k.replace('.valid.', '.test.')]:.4f} |")
            lines += ["", "Each row: BLAST's chosen configuration with that one knob changed (a train.n_layers_uu > 0 "
                      "row also turns the user graph on, a marginal row OT at ratio 0.1 where the choice has none); the chosen value's row is the chosen configuration. Valid and "
                      "test are both shown; nothing is chosen from this table.", ""]
        lift = [k for k in out if k.startswith(f"{ds}.ot_lift.") and k.endswith(".relative")]
        if lift:
            lines += ["| backbone + OT augmentation | test recall@20 | relative to the backbone |", "|---|---|---|"]
            for k in lift:
                mo = k.split(".")[2]
                lines.append(f"| {mo} | {_fmt(out, f'{ds}.ot_lift.{mo}.test.recall@20')} | {out[k]:+.1%} |")
            lines.append("")
    lines += goals_section(out, args.datasets)
    if not dataset_done:
        lines += ["_(partial: the run is still in progress)_", ""]
    return "\n".join(lines)


# The goals (#13), checked against the figures above; a goal not met says so, and where.
CONTENT_DATASETS = ("ml-100k", "amazon-scientific")  # the datasets with item content: +3% at p < 0.05
OT_LIFT_DATASET, OT_LIFT_MIN = "amazon-scientific", 0.02


def goal_rows(out: dict[str, Any], datasets: list[str]) -> list[tuple[str, str, str]]:
    """(goal, figure, met / NOT met / not run) per goal of the issue, from the flat keys only."""
    rows = []
    for ds in datasets:
        rel, p = out.get(f"{ds}.blast_vs_best_baseline"), out.get(f"{ds}.blast_vs_best_baseline.p")
        if rel is None:
            rows.append((f"{ds}: BLAST >= the best tuned baseline (test Recall@20 mean)", "-", "not run"))
            continue
        best = out.get(f"{ds}.best_baseline")
        same = identical_to(out, ds, f"{ds}.blast") == best
        rows.append((f"{ds}: BLAST >= the best tuned baseline (test Recall@20 mean)", f"{rel:+.1%} vs {best}",
                     "NOT met" if rel < 0 else "met" if rel > 0 else
                     f"met as a tie (BLAST's choice is {best}'s configuration: the same computation)" if same
                     else "met as a tie"))
        if ds in CONTENT_DATASETS:
            rows.append((f"{ds}: BLAST >= +3% over {best} with p < 0.05", f"{rel:+.1%}, p = {p:.3g}",
                         "met" if rel >= 0.03 and p < 0.05 else "NOT met"))
    if OT_LIFT_DATASET in datasets:
        lifts = {k.split(".")[2]: v for k, v in out.items()
                 if k.startswith(f"{OT_LIFT_DATASET}.ot_lift.") and k.endswith(".relative")}
        fig = ", ".join(f"{m} {v:+.1%}" for m, v in sorted(lifts.items())) or "-"
        state = ("not run" if not lifts else "met" if min(lifts.values()) >= OT_LIFT_MIN else "NOT met")
        rows.append((f"{OT_LIFT_DATASET}: OT augmentation lifts every backbone by >= {OT_LIFT_MIN:.0%}", fig, state))
    return rows


def goals_section(out: dict[str, Any], datasets: list[str]) -> list[str]:
    rows = goal_rows(out, datasets)
    if not rows:
        return []
    lines = ["## Goals of the quality issue", "",
             "Checked against the tables above (test figures of configurations chosen on validation; nothing here "
             "was chosen on test). Where a goal is not met, its dataset's paragraph, ablations, sensitivity and "
             "OT-lift tables above say why.", "",
             "| goal | figure | state |", "|---|---|---|"]
    lines += [f"| {g} | {f} | {st if st != 'NOT met' else '**NOT met**'} |" for g, f, st in rows]
    return lines + [""]


def why_blast_trails(out: dict[str, Any], ds: str, max_epochs: int = 0) -> str:
    """The paragraph under a table where a baseline wins: what the VALIDATION figures say about
    BLAST's choice (never a test figure: nothing is chosen here)."""
    start = out.get(f"{ds}.blast.search_started_from")
    p1, p2 = out.get(f"{ds}.blast.start_point1.valid"), out.get(f"{ds}.blast.start_point2.valid")
    b_valid, s_valid = out.get(f"{ds}.blast.valid.recall@20.mean"), out.get(f"{ds}.{start}.valid.recall@20.mean")
    only_propagation = not any(v for k, v in out.items() if k.startswith(f"{ds}.blast.keeps.")
                               and not k.endswith(".graph_propagation"))
    tie = out.get(f"{ds}.blast_vs_best_baseline") == 0
    best = out.get(f"{ds}.best_baseline")
    if best and identical_to(out, ds, f"{ds}.blast") == best:
        return ((f"**Why BLAST does not gain here (validation figures only).** " if tie else
                 "**Why BLAST trails here (validation figures only).** ")
                + f"BLAST's validation choice is {best}'s configuration inside BLAST's space (the parts {best} lacks "
                "off): the same computation, so its seeded runs equal " + best + "'s exactly. No configuration "
                "with more of BLAST's parts scored higher on validation within this budget"
                + ("; the ablations, sensitivity and OT-lift tables below show what the parts do here."
                   if any(k.startswith((f"{ds}.ablation.", f"{ds}.sensitivity.", f"{ds}.ot_lift.")) for k in out)
                   else " (no ablations, sensitivity or OT lift were run at this dataset's budget)."))
    text = ("**Why BLAST does not gain here (validation figures only).** " if tie
            else "**Why BLAST trails here (validation figures only).** ")
    if start and only_propagation and p1 is not None:
        text += (f"Its search fell back to the simpler model: trial 1 ({start}'s chosen lr / l2_weight / layers with every "
                 f"BLAST part off) scored valid Recall@20 {p1:.4f}")
        if p2 is not None:
            text += f", the config's BLAST parts on top of the same values {p2:.4f}"
        if out.get(f"{ds}.blast_fallback_is_exact"):
            text += (", and no sampled trial did better. With every part off BLAST computes " + start + " exactly (a "
                     "0-layer graph branch is off: models/blast.py); what remains between the seeded runs comes from "
                     "training (seeds, epochs, early stopping), not from the model")
        else:  # a run from before that model fix (its figures say so; they are not re-labelled)
            text += (", and no sampled trial did better. What still separates it from " + start + " is BLAST's 0-layer "
                     "item branch (f_i = the propagated item vector + its ID embedding once more, S^0 = I; this run "
                     "predates the model fix that turns a 0-layer branch off)")
        if b_valid is not None and s_valid is not None:
            text += (f": over the seeds, valid Recall@20 {b_valid:.4f} for BLAST vs {s_valid:.4f} for {start} "
                     f"({b_valid / s_valid - 1:+.1%}; on test {out.get(f'{ds}.blast_vs_best_baseline', float('nan')):+.1%} "
                     "against the best baseline)")
        text += ". Ablations below that equal full BLAST remove parts the choice does not use."
    else:
        kept = [k.rsplit(".", 1)[1] for k, v in out.items() if k.startswith(f"{ds}.blast.keeps.") and v]
        best = out.get(f"{ds}.best_baseline")
        text += f"BLAST's chosen configuration keeps some of its parts ({', '.join(kept)})."
        bt, ot = out.get(f"{ds}.blast.tune_valid"), out.get(f"{ds}.{best}.tune_valid")
        ov = out.get(f"{ds}.{best}.valid.recall@20.mean")
        if None not in (bt, ot, b_valid, ov):
            text += (f" Valid Recall@20 of the chosen trial within the tune's <= {max_epochs}-epoch trials: BLAST {bt:.4f} vs "
                     f"{best} {ot:.4f}; over the seeded runs (the config's epochs, early stopping on validation): BLAST "
                     f"{b_valid:.4f} vs {best} {ov:.4f}.")
            if bt > ot and b_valid < ov:
                text += (f" The order flips between the capped trials and full-length training: within {max_epochs} "
                         f"epochs BLAST led {best} on validation, trained to convergence {best} leads on validation too "
                         "(a longer --max-epochs would let the tune see it; never a choice on test).")
        text += " The ablations below show what each part of BLAST's choice costs or gains."
    return text


def _write(args, out: dict[str, Any], md: str) -> None:
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1, sort_keys=True))
    if args.md:
        Path(args.md).write_text(md)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="ml-100k", help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--trials", type=int, default=12, help="tune trials per model (the same for every model)")
    p.add_argument("--max-epochs", type=int, default=40, help="epochs per tune trial at most")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--seed-max-epochs", type=int, default=0,
                   help="cap the seeded, ablation, sensitivity and OT-lift runs at this many epochs (0: the config's "
                        "epochs); for the large datasets, stated in the tables")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--max-concurrent", type=int, default=1)
    p.add_argument("--rerank", type=int, default=3,
                   help="re-score each model's top N tune trials at full length on validation and choose the best "
                        "(0 or 1: the tune's capped-epoch choice); the same N for every model")
    p.add_argument("--ablations", action="store_true")
    p.add_argument("--sensitivity", action="store_true")
    p.add_argument("--ot-lift", action="store_true")
    p.add_argument("--store", default=str(ROOT / "blast-data" / "quality"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "quality.json"))
    p.add_argument("--md", default=str(ROOT / "docs" / "RESULTS.md"), help="'' to skip")
    p.add_argument("--from-chosen", action="store_true",
                   help="tune nothing: train --seeds seeds of the configurations an earlier run with the same tune "
                        "budget chose (the <dataset>.<model>.chosen keys of --json; its tune and re-rank figures are "
                        "kept), e.g. to add seeds when that run's tune store is gone")
    p.add_argument("--render-only", action="store_true",
                   help="write --md from the flat keys of --json (datasets in --datasets), run nothing")
    args = p.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.models = [m for m in args.models.split(",") if m]
    args.models = sorted(args.models, key=lambda m: MODELS.index(m) if m in MODELS else len(MODELS))  # simpler first (staged search)
    for d in args.datasets:
        if d not in CONFIGS:
            p.error(f"unknown dataset {d!r}; choose from {', '.join(CONFIGS)}")
    for m in args.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    if args.render_only:
        out = json.loads(Path(args.json).read_text())
        Path(args.md).write_text(md_tables(out, args, dataset_done=True))
        print_result(out)  # the stored run's figures: every run of a benchmark ends with its RESULT line
        return 0
    args.store = str(Path(args.store).resolve())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
    }
    if Path(args.json).exists():  # a resumed run keeps what finished (tune experiments resume too)
        out = {**merge_previous(json.loads(Path(args.json).read_text()), args), **out}
    t0 = time.time()
    for d in args.datasets:
        run_dataset(d, args, out, [])
    out["seconds"] = round(time.time() - t0, 1)
    _write(args, out, md_tables(out, args, dataset_done=True))
    print_result(out)
    return 0


def merge_previous(prev: dict[str, Any], args) -> dict[str, Any]:
    """The stored figures a run keeps: every dataset's, except those of a dataset run now with a
    different budget (its figures are redone; a run with the same budget resumes its tunes). A file
    from before per-dataset budgets has its file-wide budget moved onto each of its datasets."""
    prev = dict(prev)
    legacy = {k: prev.pop(k) for k in ("trials_per_model", "max_epochs_per_trial", "seeds") if k in prev}
    for ds in CONFIGS:
        has = any(k.startswith(f"{ds}.") for k in prev)
        if has and legacy and f"{ds}.trials_per_model" not in prev:
            prev.update({f"{ds}.{k}": v for k, v in legacy.items()})
            prev.setdefault(f"{ds}.seed_max_epochs", 0)
    for ds in args.datasets:
        stored, now = dataset_budget(prev, ds), dataset_budget(budget_keys(ds, args), ds)
        if getattr(args, "from_chosen", False):
            # The stored choices are kept only for the tune budget they were made with; the seeds change.
            if stored[:2] + stored[3:] != now[:2] + now[3:]:
                raise SystemExit(f"--from-chosen: the stored {ds} figures were tuned with (trials, epochs per trial, "
                                 f"seed epoch cap, re-rank) = {stored[:2] + stored[3:]}, this run asks for "
                                 f"{now[:2] + now[3:]}; pass the stored budget")
            drop = (".test.", ".valid.recall@20.", ".seeds", ".ablation.", ".sensitivity.", ".ot_lift.",
                    ".blast_vs_best_baseline", ".best_baseline")
            prev = {k: v for k, v in prev.items()  # per-seed records stay: they resume the seeded runs
                    if not (k.startswith(f"{ds}.") and any(d in k[len(ds):] for d in drop) and not _SEED_KEY.search(k))}
        elif stored != now:
            prev = {k: v for k, v in prev.items() if not k.startswith(f"{ds}.")}
    return prev


def print_result(out: dict[str, Any]) -> None:
    """``RESULT {json}``: the flat figures of ``out`` (nested entries left out)."""
    flat = {k: v for k, v in out.items() if isinstance(v, (int, float, str, bool))}
    print("RESULT " + json.dumps(flat, sort_keys=True))


if __name__ == "__main__":
    raise SystemExit(main())
