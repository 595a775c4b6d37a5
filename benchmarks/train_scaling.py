"""Training cost against the number of interactions (issue 12 item 5): synthetic interaction graphs
with Baby's degree distributions at 1M, 3M and 10M interactions, LightGCN and BLAST, one worker.

    .venv/bin/python benchmarks/train_scaling.py [--sizes 1M,3M,10M] [--models lightgcn,blast]
        [--steps 5] [--step-stat min] [--eval-users 2048] [--seed 2024] [--threads 1] [--parallel 1]
        [--repeats 1]

How the graphs are drawn (no ETL; arrays straight into ``InteractionData``): user activities and
item popularities follow discrete power laws (d >= 5) whose exponents are the maximum-likelihood
fits of benchmarks/synth_amazon.py to the real Baby 5-core's user and item degrees, with Baby's
mean user and item degrees; each user's items are drawn by popularity, duplicate pairs dropped;
every pair goes to train/valid/test with probability 0.8/0.1/0.1. BLAST gets what exercises its
three-graph propagation: a random item kNN graph S_I and user kNN graph S_U of ``--knn`` neighbours,
random 384-d item_text and user_text features, and augmented pairs H (~10% of train, random pairs).

What is measured, each (model, size) in a FRESH subprocess (so the peak memory is that run's);
seconds are the process's CPU seconds (``time.process_time``; one torch thread, so equal to the wall
time of an idle machine: the machine these figures come from is shared, wall time is reported too):
- epoch_s: an epoch at the trainer's step plan (``train.max_steps_per_epoch`` default, the batch
  grown with the data) is too long to run whole here at 3M-10M, so ``--steps`` optimizer steps are
  timed (after one warm-up step) and projected: epoch_s = setup (the epoch's pruned graph, shuffled
  triples and negatives, timed once) + steps_per_epoch x the fastest timed step (``--step-stat min``,
  default since issue 12's second pass: on a shared machine other jobs only slow a step down; until
  then the median of 3, kept as ``step_median_s``). What the trainer builds
  once per run (the full graph, S_I, S_U, the feature tensors: ``run_setup_s``) is not in an epoch;
  the optimizer is the trainer's (``loop.adam``). The same step time
  projects today's rule (fixed batch 2,048, positives / 2,048 steps) as ``epoch_s_old_rule``.
- eval_s: one full propagation (the representations) + full ranking of ``--eval-users`` random users
  (train items masked) projected to all users, in blocks of users sized as the train stage sizes
  its validation blocks (``evaluate.block_memory_gib``, default 1 GiB of scores; before, a fixed
  4,096 users: 7 GB of scores at 10M's 438k items, more than a worker holds).
- ``--repeats R``: each (model, size) runs in R fresh children (rounds over all of them); its figures
  are those of the child with the median epoch_s (all R epochs kept as ``epoch_s_repeats``; the
  peak memory the largest): on an idle VM the timed step moves 10-20% between processes.
- Every child starts with the trainer's process environment (``runtime.PROCESS_ENV_DEFAULTS``:
  torch's transparent-huge-page allocation, unless set otherwise; recorded as ``thp_mem_alloc``).
- worker_peak_gib: the process's peak RSS (``resource.getrusage`` ru_maxrss; psutil has no peak on
  Linux) after data generation, setup, the steps and the evaluation.
- allreduce_gb_per_epoch: what the trainer reports for 8 workers (``inputs.allreduce_bytes_per_epoch``:
  trainable parameter bytes x steps per epoch), and the old rule's figure.
Ends with ``RESULT {json}``: ``<model>.epoch_s@<size>``, ``<model>.eval_s@<size>``,
``<model>.worker_peak_gib@<size>``, ``<model>.allreduce_gb_per_epoch@<size>``, the summary
``epoch_time_exponent_max`` (over models: log(t_largest / t_smallest) / log(size ratio)) and
``baby.recall_delta_min`` (from benchmarks/results/linear_epoch_quality.json when present, else null).
``--merge a.json,b.json --out c.json`` merges the details of earlier runs (later files win) and
recomputes RESULT.
A size ``baby`` measures the real Baby interactions the same way (BLAST with the synthetic side
inputs above); it is left out of the exponent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
QUALITY_JSON = HERE / "results" / "linear_epoch_quality.json"
OLD_BATCH = 2048
WORKERS_PROJECTED = 8
FEATURE_DIM = 384
# Seconds are this process's CPU seconds: one torch thread, so on an idle machine CPU time = wall
# time; on this shared 2-core machine (load often 10-30) wall time measures the neighbours.
CLOCK = time.process_time


def size_label(n: int) -> str:
    return "baby" if n == 0 else f"{n / 1e6:g}M"


def baby_degree_model(data_dir: Path) -> dict:
    """Power-law exponents and mean degrees of the real Baby 5-core (users and items)."""
    from synth_amazon import powerlaw_alpha, real_degrees

    deg = real_degrees(data_dir)
    u, i = deg["baby.users"], deg["baby.items"]
    return {"alpha_users": powerlaw_alpha(u), "alpha_items": powerlaw_alpha(i), "mean_user": float(u.mean()),
            "mean_item": float(i.mean()), "max_user": int(u.max()), "max_item": int(i.max()), "n_inter": int(u.sum())}


def synth_interactions(n: int, seed: int, model: dict):
    """(InteractionData, stats) with about ``n`` distinct (user, item) pairs, Baby's degree laws."""
    import scipy.sparse as sp

    from blast_ray.data.interactions import InteractionData
    from synth_amazon import draw_powerlaw

    rng = np.random.default_rng(seed)
    scale = max(1.0, math.sqrt(n / model["n_inter"]))
    acts = draw_powerlaw(rng, model["alpha_users"], int(n / model["mean_user"] * 1.2) + 10, int(model["max_user"] * scale))
    csum = np.cumsum(acts)
    n_users = int(min(len(acts), np.searchsorted(csum, n) + 1))
    acts = acts[:n_users]
    n_items = max(10, int(round(n / model["mean_item"])))
    pop = draw_powerlaw(rng, model["alpha_items"], n_items, int(model["max_item"] * scale)).astype(np.float64)
    cdf = np.cumsum(pop / pop.sum())
    users = np.repeat(np.arange(n_users, dtype=np.int64), acts)
    items = np.minimum(np.searchsorted(cdf, rng.random(len(users))), n_items - 1).astype(np.int64)
    keys = np.unique(users * n_items + items)
    users, items = keys // n_items, keys % n_items
    part = rng.random(len(keys))
    mats = []
    for lo, hi in ((0.0, 0.8), (0.8, 0.9), (0.9, 1.01)):
        m = (part >= lo) & (part < hi)
        mats.append(sp.csr_matrix((np.ones(int(m.sum()), dtype=np.float32), (users[m], items[m])), shape=(n_users, n_items)))
    data = InteractionData(n_users, n_items, *mats)
    return data, {"users": n_users, "items": n_items, "interactions": int(len(keys)), "train": int(mats[0].nnz)}


def random_knn(n: int, k: int, rng) -> "sp.csr_matrix":
    """A random k-neighbour graph (n x n, k entries per row, no self loops, weights 1)."""
    import scipy.sparse as sp

    cols = (np.arange(n)[:, None] + rng.integers(1, max(2, n), size=(n, k))) % n
    return sp.csr_matrix((np.ones(n * k, dtype=np.float32), (np.repeat(np.arange(n), k), cols.ravel())), shape=(n, n))


def child(model_name: str, n: int, args) -> dict:
    """One (model, size) measurement; runs in its own process."""
    from blast_ray.runtime import apply_process_env_defaults

    apply_process_env_defaults()  # as a training worker starts (before torch allocates)
    import torch

    torch.set_num_threads(args.threads)
    from blast_ray.config import EvaluateConfig, TrainConfig, shared_data_dir
    from blast_ray.ranking.metrics import users_per_block
    from blast_ray.models.graph_backend import get_backend
    from blast_ray.ranking.scoring import score_split
    from blast_ray.data.interactions import InteractionData
    from blast_ray.train.inputs import (TrainInputs, allreduce_bytes_per_epoch, epoch_triples, graph_inputs, model_for,
                                        parameter_bytes, step_plan, step_plan_for)
    from blast_ray.train.loop import adam

    t_gen = time.perf_counter()
    if n == 0:  # the real Baby interactions (the one-worker speed reference of benchmarks/train_throughput.py)
        from blast_ray.etl.readers import read_lattice_split

        data = read_lattice_split(shared_data_dir() / "amazon-baby-5core")
        stats = {"users": data.n_users, "items": data.n_items, "train": data.n_train,
                 "interactions": int(data.train.nnz + data.valid.nnz + data.test.nnz)}
    else:
        data, stats = synth_interactions(n, args.seed, baby_degree_model(shared_data_dir()))
    inputs = TrainInputs(data)
    rng = np.random.default_rng(args.seed + 1)
    if model_name == "blast":
        inputs.item_graph = random_knn(data.n_items, args.knn, rng)
        inputs.user_graph = random_knn(data.n_users, args.knn, rng)
        inputs.features = {"item_text": rng.standard_normal((data.n_items, FEATURE_DIM), dtype=np.float32),
                           "user_text": rng.standard_normal((data.n_users, FEATURE_DIM), dtype=np.float32)}
        n_h = int(0.1 * data.n_train)
        inputs.extra_users = rng.integers(0, data.n_users, n_h)
        inputs.extra_items = rng.integers(0, data.n_items, n_h)
    gen_s = time.perf_counter() - t_gen
    cfg = TrainConfig(model=model_name, seed=args.seed)
    plan = step_plan_for(cfg, inputs, 1)
    backend = get_backend(cfg.graph_backend)
    torch.manual_seed(cfg.seed)
    model = model_for(cfg, inputs)
    opt = adam(model.parameters(), cfg.lr * plan.lr_scale)  # the trainer's optimizer (fused where torch has it)

    c_run = CLOCK()  # once per run, as in train_loop: the full graph (evaluation), S_I, S_U, features
    full = graph_inputs(cfg, inputs, backend, "cpu", epoch=None)
    run_setup_s = CLOCK() - c_run
    t0, c0 = time.perf_counter(), CLOCK()
    g = graph_inputs(cfg, inputs, backend, "cpu", epoch=0, reuse=full)
    users, pos, neg = epoch_triples(inputs, cfg.seed, 0, 0, 1)
    tu, tp, tn = (torch.from_numpy(a) for a in (users, pos, neg))
    setup_s, setup_wall = CLOCK() - c0, time.perf_counter() - t0
    slices = plan.slices()
    step_s, step_wall = [], []
    for s, sl in enumerate(slices[: args.steps + 1]):
        t1, c1 = time.perf_counter(), CLOCK()
        loss = model(g, tu[sl], tp[sl], tn[sl])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s > 0 or len(slices) == 1:  # the first step warms up allocators and CSR transposes
            step_s.append(CLOCK() - c1)
            step_wall.append(time.perf_counter() - t1)
    del g
    train_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # before the evaluation
    # the least disturbed step: other jobs on a shared machine only ever slow a step down (the median
    # of 3 moved by +-30% between back-to-back runs at load 10-20); the median is kept in the details
    step = float(min(step_s)) if args.step_stat == "min" else float(np.median(step_s))
    epoch_s = setup_s + plan.steps * step
    old = step_plan(plan.n_total, 1, OLD_BATCH, 10**12)
    # evaluation: one full propagation + full ranking of a user sample, projected to all users
    c2 = CLOCK()
    model.eval()
    with torch.no_grad():
        h_u, f_i = model.representations(full)
    repr_s = CLOCK() - c2
    # the worker's validation block, sized as the train stage sizes it (evaluate.block_memory_gib)
    ev = EvaluateConfig()
    block = users_per_block(data.n_items, ev.block_memory_gib, ev.batch_users)
    sample = np.sort(np.random.default_rng(args.seed + 2).choice(data.n_users, min(args.eval_users, data.n_users), replace=False))
    sub = InteractionData(len(sample), data.n_items, data.train[sample], data.valid[sample], data.test[sample])
    c3 = CLOCK()
    score_split(h_u[torch.from_numpy(sample)], f_i, sub, "valid", (20,), block)
    score_s = CLOCK() - c3
    eval_s = repr_s + score_s * data.n_users / len(sample)
    pbytes = parameter_bytes(model)
    p8 = step_plan(plan.n_total, WORKERS_PROJECTED, cfg.batch_size, cfg.max_steps_per_epoch)
    old8 = step_plan(plan.n_total, WORKERS_PROJECTED, OLD_BATCH, 10**12)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {
        **stats, "positives": plan.n_total, "steps_per_epoch": plan.steps, "batch_size": plan.batch_size,
        "lr_scale": plan.lr_scale, "gen_s": gen_s, "run_setup_s": run_setup_s, "setup_s": setup_s, "step_s": step, "step_stat": args.step_stat,
        "step_median_s": float(np.median(step_s)), "steps_timed": len(step_s),
        "epoch_s": epoch_s, "epoch_wall_s": setup_wall + plan.steps * float(np.median(step_wall)),
        "epoch_s_old_rule": setup_s + old.steps * step, "old_rule_steps": old.steps,
        "repr_s": repr_s, "eval_users_timed": len(sample), "eval_block_users": block, "eval_s": eval_s, "worker_peak_gib": peak,
        "train_peak_gib": train_peak,
        "parameter_bytes": pbytes,
        "allreduce_gb_per_epoch": allreduce_bytes_per_epoch(pbytes, p8.steps, WORKERS_PROJECTED) / 1e9,
        "allreduce_gb_per_epoch_old_rule": allreduce_bytes_per_epoch(pbytes, old8.steps, WORKERS_PROJECTED) / 1e9,
    }


def parse_size(s: str) -> int:
    """'1M' -> 1_000_000 ...; 'baby' -> 0 (the real Baby interactions)."""
    from synth_amazon import parse_size as p

    return 0 if s.strip().lower() == "baby" else p(s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1M,3M,10M")
    ap.add_argument("--models", default="lightgcn,blast")
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps timed per (model, size), projected to an epoch")
    ap.add_argument("--step-stat", choices=("min", "median"), default="min",
                    help="which timed step projects the epoch (min: least disturbed by other jobs)")
    ap.add_argument("--eval-users", type=int, default=2048)
    ap.add_argument("--knn", type=int, default=10)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=1, help="children run at once (memory: each holds its own graph)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="fresh children per (model, size), in rounds over all of them; the median epoch is reported "
                         "(an idle VM's step moves 10-20%% between processes)")
    ap.add_argument("--merge", help="comma list of result JSONs of earlier runs: merged into --out, RESULT recomputed")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_scaling.json")
    args = ap.parse_args()
    if args.merge:  # several runs' JSON (e.g. sizes run at different times) -> one --out and one RESULT
        docs = [json.loads(Path(f).read_text()) for f in args.merge.split(",")]
        details = {k: v for doc in docs for k, v in doc["details"].items()}
        res = {k: v for k, v in docs[-1]["result"].items() if "@" not in k and "exponent" not in k}
        res["merged_from"] = args.merge
        res.update(summary(details))
        args.out.write_text(json.dumps({"result": res, "details": details}, indent=1, sort_keys=True))
        print("RESULT " + json.dumps(res), flush=True)
        return
    if args.child:
        print("CHILD " + json.dumps(child(args.child[0], parse_size(args.child[1]), args)), flush=True)
        return
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    from blast_ray.runtime import apply_process_env_defaults

    apply_process_env_defaults()  # the children inherit it, as the trainer's workers do
    res: dict = {"machine": platform.node(), "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE"), "cpus": os.cpu_count(), "threads": args.threads, "seed": args.seed,
                 "steps_timed": args.steps, "step_stat": args.step_stat, "eval_users": args.eval_users, "knn": args.knn,
                 "note": "one worker, one torch thread, seconds = process CPU seconds; epoch_s and eval_s projected from timed steps / a user sample (see docstring); "
                         "allreduce for 8 workers as the trainer reports it; machine shared with other jobs"}
    details: dict = {}
    if args.repeats < 1:
        ap.error(f"--repeats {args.repeats}: must be at least 1")
    res["repeats"] = args.repeats
    # rounds: every (model, size) once, then again, so a drift of the machine touches all of them alike
    jobs = [(r, model, n) for r in range(args.repeats) for n in sorted(sizes, reverse=True) for model in args.models.split(",")]

    def run_child(job):
        _, model, n = job
        cmd = [sys.executable, __file__, "--child", model, str(n), "--steps", str(args.steps), "--step-stat", args.step_stat, "--eval-users",
               str(args.eval_users), "--knn", str(args.knn), "--seed", str(args.seed), "--threads", str(args.threads)]
        return subprocess.run(cmd, capture_output=True, text=True)

    # --parallel > 1 runs several children at once (largest first): CPU seconds and each child's own
    # peak RSS are unaffected; only the wall times grow.
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        done = dict(zip(jobs, pool.map(run_child, jobs)))
    for model in args.models.split(","):
        for n in sizes:
            lab = size_label(n)
            runs = []
            for r in range(args.repeats):
                p = done[(r, model, n)]
                line = [ln for ln in p.stdout.splitlines() if ln.startswith("CHILD ")]
                if p.returncode != 0 or not line:
                    print(f"{model}@{lab} failed (rc {p.returncode}): {p.stderr.strip().splitlines()[-1:] }", flush=True)
                    details[f"{model}@{lab}"] = {"error": (p.stderr.strip().splitlines() or ["?"])[-1], "rc": p.returncode}
                    break
                runs.append(json.loads(line[-1][6:]))
                print(json.dumps({"model": model, "size": lab, "repeat": r, **runs[-1]}), flush=True)
            else:
                details[f"{model}@{lab}"] = median_run(runs)
    res.update(summary(details))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"result": res, "details": details}, indent=1, sort_keys=True))
    print("RESULT " + json.dumps(res), flush=True)


def median_run(runs: list[dict]) -> dict:
    """One (model, size)'s figures from its repeated children: the run with the median epoch_s
    (the lower middle for an even count), its peers' epochs kept as ``epoch_s_repeats``; the peak
    memory is the largest of them."""
    ranked = sorted(runs, key=lambda d: d["epoch_s"])
    d = dict(ranked[(len(ranked) - 1) // 2])
    if len(runs) > 1:
        d["epoch_s_repeats"] = [round(x["epoch_s"], 3) for x in runs]
        d["worker_peak_gib"] = max(x["worker_peak_gib"] for x in runs)
    return d


def summary(details: dict) -> dict:
    """The RESULT keys computed from the per-(model, size) details: the four figures per model and
    size, the exponents (smallest to largest synthetic size) and baby.recall_delta_min."""
    res: dict = {}
    for key, d in details.items():
        if "epoch_s" not in d:
            continue
        model, lab = key.split("@")
        for k in ("epoch_s", "eval_s", "worker_peak_gib", "allreduce_gb_per_epoch", "epoch_s_old_rule",
                  "allreduce_gb_per_epoch_old_rule"):
            res[f"{model}.{k}@{lab}"] = round(d[k], 4)
    exps = []
    for model in sorted({k.split("@")[0] for k in details}):
        done = sorted((d["interactions"], d) for k, d in details.items()
                      if k.startswith(model + "@") and not k.endswith("@baby") and "epoch_s" in d)
        if len(done) >= 2:
            (n0, d0), (n1, d1) = done[0], done[-1]
            e = math.log(d1["epoch_s"] / d0["epoch_s"]) / math.log(n1 / n0)
            res[f"{model}.epoch_time_exponent"] = round(e, 4)
            res[f"{model}.epoch_time_exponent_old_rule"] = round(
                math.log(d1["epoch_s_old_rule"] / d0["epoch_s_old_rule"]) / math.log(n1 / n0), 4)
            exps.append(e)
    res["epoch_time_exponent_max"] = round(max(exps), 4) if exps else None
    q = json.loads(QUALITY_JSON.read_text()) if QUALITY_JSON.exists() else {}
    res["baby.recall_delta_min"] = q.get("summary", {}).get("baby.recall_delta_min")
    return res


if __name__ == "__main__":
    main()
