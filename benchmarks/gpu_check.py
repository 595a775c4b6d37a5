"""GPU check: the project's real training core (models, train loop, ranking) on CUDA, on a machine
that has only Python + torch (CUDA) + numpy/scipy: no Ray, Spark, pydantic, FAISS or network.

Two steps (issue 12 item 8):

1. Here (the full project environment): ``python benchmarks/gpu_check.py --prepare`` writes
   ``benchmarks/gpu_data/`` (git-ignored, about 10 MiB): real Baby 5-core interactions
   (``../shared/data/amazon-baby-5core``) as train/valid/test CSR ``.npz``, BLAST's side inputs
   built by the project's own cores (a 16-d item modality from the SVD of R's item columns (Baby
   has no features here), user profiles ``R @ item_x``, the item and user kNN graphs S_I / S_U
   (``graphs.knn_k``, symmetric-normalised), the false-negative set G and the OT-augmented pairs H
   (Sinkhorn + top-q with the ``augment`` defaults)), the ``train`` / ``evaluate`` config defaults
   as JSON (so the device side needs no pydantic), and the reference CPU losses of the first
   epochs computed here (``reference.json``: torch version, machine).
2. On the device machine: ``python benchmarks/gpu_check.py`` (default ``--device cuda``) trains
   LightGCN and BLAST on Baby on CUDA (``--epochs``, default 3) through
   :func:`blast_ray.train.loop.train_loop`, retrains their first ``--cpu-epochs`` (default 2) on
   the CPU in the same process with the same seed, and checks the per-epoch mean BPR losses agree
   (``--loss-rtol``, default 1e-3; see LOSS_RTOL below). It also compares them with the losses
   stored at ``--prepare`` time (another torch build: ``--ref-rtol``, default 2e-3, REF_RTOL).
   Then it times an
   epoch and a full-ranking pass (valid split, the trainer's own ``validate``) on CUDA at Baby and
   at synthetic sizes (``--sizes``, default 3M,10M interactions) generated on the device with
   Baby's degree distributions. A synthetic run whose projected epoch would not fit the time
   budget (``--budget-s``, default 360 s; projected from a few timed steps at that size) is
   skipped and said so. Ends with ``RESULT {json}``.

``--device cpu --quick`` runs the same code on a CPU with tiny sizes (the end-to-end test,
``tests/test_gpu_check.py``). Seeds: ``--seed`` (default: ``train.seed``, 2024) for training,
``--seed + 1`` for the synthetic graphs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file on the device machine: the project's code beside it
    sys.path.insert(0, str(ROOT))

DEFAULT_DIR = Path(__file__).resolve().parent / "gpu_data"
DEFAULT_SHARED = ROOT.parent / "shared" / "data"
MODELS = ("lightgcn", "blast")
# Tolerance on the per-epoch mean BPR loss, relative, CUDA vs CPU in the same process (same torch
# build): both start from the same weights (initialised on the CPU from the same seed) and draw the
# same permutations, negatives (numpy) and pruned graphs (torch.multinomial with a CPU generator),
# so they differ only by float32 summation order (cuSPARSE vs CPU SpMM, cuBLAS vs CPU GEMM, atomic
# scatter-adds in the embedding gradients: about 1e-7 relative per operation), which Adam carries
# through a few hundred steps: expected well below 1e-4. A real fault (a mask, a graph or a
# negative that differs, a wrong normalisation) moves an epoch's loss by more than 1e-2.
LOSS_RTOL = 1e-3
# Tolerance against the losses stored at --prepare (another machine, another torch build). Measured
# here on full Baby, torch 2.13 (prepare) vs 2.2.1 (.venv-dgl), CPU, 2 epochs: LightGCN bit-equal;
# BLAST 7e-5 then 3.5e-4, because torch.multinomial (the per-epoch edge pruning) draws different
# samples in the two builds (a different pruned graph, not arithmetic). Hence a looser bound.
REF_RTOL = 2e-3
SIZE_UNITS = {"": 1, "k": 1_000, "m": 1_000_000}


def parse_size(text: str) -> int:
    """'3M' -> 3_000_000, '30k' -> 30_000."""
    t = text.strip().lower()
    unit = t[-1] if t and t[-1] in "km" else ""
    return int(float(t[: len(t) - len(unit)]) * SIZE_UNITS[unit])


# ---- --prepare (full project environment) -------------------------------------------------------
def prepare(out: Path, data_dir: Path, max_users: int | None, ref_epochs: int) -> dict:
    """Write the data folder (see the module docstring) and return its summary."""
    from scipy.sparse.linalg import svds

    from blast_ray.augment.false_negatives import false_negative_candidates
    from blast_ray.augment.sinkhorn import sparse_sinkhorn
    from blast_ray.augment.topq import top_q_cells
    from blast_ray.config import AugmentConfig, EvaluateConfig, GraphsConfig, TrainConfig
    from blast_ray.etl.readers import read_lattice_split
    from blast_ray.graphs.knn import knn_graph, sym_normalize

    out.mkdir(parents=True, exist_ok=True)
    data = read_lattice_split(data_dir / "amazon-baby-5core", max_users=max_users)
    R = data.train.tocsr()
    gcfg, acfg = GraphsConfig(), AugmentConfig()
    u, s, _ = svds(R.T.astype(np.float64).tocsr(), k=16, random_state=0)
    item_x = (u * s).astype(np.float32)
    user_x = np.asarray(R @ item_x, dtype=np.float32)
    s_item = knn_graph(item_x, gcfg.knn_k)
    s_user = knn_graph(user_x, gcfg.knn_k)
    G = false_negative_candidates(R, [s_item])
    ot = sparse_sinkhorn(R, G, eps=acfg.eps, tol=acfg.tol, max_iter=acfg.max_iter)
    hu, hi, _ = top_q_cells(ot.f, ot.g, acfg.eps, R, G, int(acfg.ratio * R.nnz))
    for name in ("train", "valid", "test"):
        sp.save_npz(out / f"{name}.npz", getattr(data, name).tocsr())
    sp.save_npz(out / "item_graph.npz", sym_normalize(s_item).astype(np.float32).tocsr())
    sp.save_npz(out / "user_graph.npz", sym_normalize(s_user).astype(np.float32).tocsr())
    sp.save_npz(out / "neg_exclude.npz", (R + G).tocsr())
    np.savez(out / "side.npz", item_text=item_x, user_text=user_x, extra_users=hu.astype(np.int64),
             extra_items=hi.astype(np.int64))
    ev = EvaluateConfig()
    meta = {"dataset": "amazon-baby-5core", "max_users": max_users, "n_users": data.n_users, "n_items": data.n_items,
            "train": TrainConfig().model_dump(mode="json"),
            "evaluate": {"ks": list(ev.ks), "batch_users": ev.batch_users, "block_memory_gib": ev.block_memory_gib,
                         "select_metric": ev.select_metric},
            "side": {"item_modality": "svd16(R items)", "knn_k": gcfg.knn_k, "augmented": int(len(hu)),
                     "augment_eps": acfg.eps, "augment_ratio": acfg.ratio}}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    # Reference CPU losses of the first epochs, in this environment (read back by the device run).
    import torch

    folder = load_folder(out)
    ref = {"torch": torch.__version__, "machine": platform.node(), "epochs": ref_epochs, "losses": {}}
    for model in MODELS:
        cfg = train_settings(folder.meta, model, epochs=max(ref_epochs, 1) + 1, seed=None, eval_every=10**6)
        ref["losses"][model] = train_losses(cfg, folder.inputs(model), folder.plan(data.n_items), "cpu", ref_epochs)
    ref["seed"] = cfg.seed
    (out / "reference.json").write_text(json.dumps(ref, indent=1))
    size = sum(p.stat().st_size for p in out.iterdir())
    return {"folder": str(out), "bytes": size, "n_users": data.n_users, "n_items": data.n_items,
            "augmented": int(len(hu)), "reference": ref}


# ---- the device side (torch + numpy + scipy only) -----------------------------------------------
@dataclasses.dataclass
class Folder:
    """The prepared data folder: interactions, BLAST's side inputs, config defaults, reference."""

    path: Path
    meta: dict
    data: object
    side: dict
    reference: dict

    def inputs(self, model: str):
        from blast_ray.train.inputs import TrainInputs

        inputs = TrainInputs(self.data)
        if model == "blast":
            inputs.features = {"item_text": self.side["item_text"], "user_text": self.side["user_text"]}
            inputs.item_graph = sp.load_npz(self.path / "item_graph.npz").tocsr()
            inputs.user_graph = sp.load_npz(self.path / "user_graph.npz").tocsr()
            inputs.extra_users, inputs.extra_items = self.side["extra_users"], self.side["extra_items"]
            inputs.neg_exclude = sp.load_npz(self.path / "neg_exclude.npz").tocsr()
        return inputs

    def plan(self, n_items: int, block_memory_gib: float | None = None):
        """The validation plan of the evaluate defaults, its user block sized for ``n_items`` from
        ``evaluate.block_memory_gib`` (or the given budget) as the train stage sizes it."""
        from blast_ray.ranking.metrics import users_per_block
        from blast_ray.train.loop import EvalPlan

        ev = self.meta["evaluate"]
        gib = float(block_memory_gib if block_memory_gib is not None else ev["block_memory_gib"])
        return EvalPlan(ks=tuple(ev["ks"]), batch_users=users_per_block(n_items, gib, int(ev["batch_users"])),
                        select_metric=ev["select_metric"])


def load_folder(path: Path) -> Folder:
    from blast_ray.data.interactions import InteractionData

    if not (path / "meta.json").exists():
        raise SystemExit(f"gpu_check: {path} has no meta.json; build it first with "
                         f"`python benchmarks/gpu_check.py --prepare --data-dir ../shared/data` (or pass --data)")
    meta = json.loads((path / "meta.json").read_text())
    mats = {s: sp.load_npz(path / f"{s}.npz").tocsr() for s in ("train", "valid", "test")}
    data = InteractionData(int(meta["n_users"]), int(meta["n_items"]), mats["train"], mats["valid"], mats["test"])
    with np.load(path / "side.npz") as z:
        side = {k: z[k] for k in z.files}
    ref_path = path / "reference.json"
    reference = json.loads(ref_path.read_text()) if ref_path.exists() else {}
    return Folder(path, meta, data, side, reference)


def train_settings(meta: dict, model: str, epochs: int, seed: int | None, **over):
    """The train section's defaults (stored by --prepare from the real ``TrainConfig``) as a frozen
    dataclass: the training core reads attributes and ``dataclasses.asdict``, not pydantic."""
    values = dict(meta["train"])
    values.update(model=model, epochs=int(epochs), graph_backend="torch", num_workers=1, progress=False, **over)
    if seed is not None:
        values["seed"] = int(seed)
    cls = dataclasses.make_dataclass("TrainSettings", [(k, object, dataclasses.field(default=v)) for k, v in values.items()],
                                     frozen=True)
    return cls()


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_losses(cfg, inputs, plan, device: str, n_epochs: int) -> list[float]:
    """Mean BPR loss of each of the first ``n_epochs`` epochs of the real train loop on ``device``
    (``max_epochs``: stops before the validation of ``cfg.epochs``)."""
    from blast_ray.train.loop import Worker, train_loop

    state = train_loop(cfg, inputs, plan, worker=Worker(device=device), max_epochs=n_epochs)
    return [float(r["loss"]) for r in state.history]


def run_model(cfg, inputs, plan, device: str):
    """Train on ``device`` for ``cfg.epochs`` (validation at the last one), then time one more
    full-ranking pass. Returns (state, rank_seconds, valid metrics)."""
    from blast_ray.train.loop import Worker, train_loop, validate
    from blast_ray.models.factory import build_model
    from blast_ray.models.graph_backend import get_backend

    state = train_loop(cfg, inputs, plan, worker=Worker(device=device))
    model = build_model(cfg, inputs.data.n_users, inputs.data.n_items, inputs.feature_dims(cfg.model)).to(device)
    model.load_state_dict(state.final_weights())
    _sync(device)
    t0 = time.perf_counter()
    valid = validate(model, cfg, inputs, "valid", plan.eval_ks, plan.batch_users, device, get_backend("torch"))
    _sync(device)
    return state, time.perf_counter() - t0, valid


def rel_diff(a: list[float], b: list[float]) -> float:
    n = min(len(a), len(b))
    if n == 0:
        return float("nan")
    return float(max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a[:n], b[:n])))


def synthetic_data(baby, n_interactions: int, seed: int):
    """Interactions with Baby's degree distributions at ``n_interactions``: user activity and item
    popularity resampled from Baby's empirical degrees, users and items scaled with the size; each
    user's items drawn in proportion to popularity (repeats dropped), then split 80/10/10 at random."""
    from blast_ray.data.interactions import InteractionData

    rng = np.random.default_rng(seed)
    full = (baby.train + baby.valid + baby.test).tocsr()
    du, di = np.diff(full.indptr), np.bincount(full.indices, minlength=full.shape[1])
    du, di = du[du > 0], di[di > 0]
    n_users = max(1, int(round(n_interactions / du.mean())))
    n_items = max(2, int(round(len(di) * n_interactions / full.nnz)))
    deg = np.minimum(rng.choice(du, n_users), n_items)
    pop = rng.choice(di, n_items).astype(np.float64)
    users = np.repeat(np.arange(n_users, dtype=np.int64), deg)
    items = rng.choice(n_items, size=len(users), p=pop / pop.sum())
    keys = np.unique(users * n_items + items)
    users, items = keys // n_items, keys % n_items
    part = rng.random(len(users))
    mats = []
    for lo, hi in ((0.0, 0.8), (0.8, 0.9), (0.9, 1.01)):
        m = (part >= lo) & (part < hi)
        mats.append(sp.csr_matrix((np.ones(int(m.sum()), np.float32), (users[m], items[m])), shape=(n_users, n_items)))
    return InteractionData(n_users, n_items, *mats)


def random_knn(n: int, k: int, rng) -> sp.csr_matrix:
    """A symmetric-normalised graph with ``k`` random neighbours per row (S_I / S_U's shape and nnz)."""
    from blast_ray.graphs.knn import sym_normalize

    cols = rng.integers(0, n, size=(n, k))
    m = sp.csr_matrix((np.ones(n * k, np.float32), (np.repeat(np.arange(n), k), cols.ravel())), shape=(n, n))
    m.data[:] = 1.0
    return sym_normalize(m).astype(np.float32).tocsr()


def synthetic_inputs(folder: Folder, data, model: str, seed: int):
    """TrainInputs for ``model`` on synthetic ``data``; BLAST gets side inputs with Baby's shapes:
    features of the same dims, kNN graphs with ``knn_k`` random neighbours, H = Baby's share of
    train, as random pairs (excluded from negatives with train, as G is)."""
    from blast_ray.train.inputs import TrainInputs

    inputs = TrainInputs(data)
    if model != "blast":
        return inputs
    rng = np.random.default_rng(seed + 7)
    k = int(folder.meta["side"]["knn_k"])
    inputs.features = {n: rng.standard_normal((rows, folder.side[n].shape[1])).astype(np.float32)
                       for n, rows in (("item_text", data.n_items), ("user_text", data.n_users))}
    inputs.item_graph = random_knn(data.n_items, k, rng)
    inputs.user_graph = random_knn(data.n_users, k, rng)
    share = len(folder.side["extra_users"]) / max(1, folder.data.train.nnz)
    q = int(share * data.train.nnz)
    hu, hi = rng.integers(0, data.n_users, q), rng.integers(0, data.n_items, q)
    inputs.extra_users, inputs.extra_items = hu.astype(np.int64), hi.astype(np.int64)
    h = sp.csr_matrix((np.ones(q, np.float32), (hu, hi)), shape=data.train.shape)
    inputs.neg_exclude = (data.train + h).tocsr()
    return inputs


def peak_gib(device: str) -> float | None:
    import torch

    if device.startswith("cuda"):
        return float(torch.cuda.max_memory_allocated() / 2**30)
    return None


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def check(args) -> dict:
    import torch

    t_start = time.perf_counter()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but torch.cuda.is_available() is False (use --device cpu to try it here)")
    folder = load_folder(Path(args.data))
    seed = args.seed if args.seed is not None else int(folder.meta["train"]["seed"])
    epochs, cpu_epochs = (2, 1) if args.quick else (args.epochs, args.cpu_epochs)
    cpu_epochs = min(cpu_epochs, epochs)
    sizes_text = args.sizes or ("30k" if args.quick else "3M,10M")
    sizes = [] if sizes_text == "none" else [parse_size(s) for s in sizes_text.split(",") if s]
    plan = folder.plan(folder.data.n_items, args.block_memory_gib)
    res: dict = {"machine": platform.node(), "device": device, "torch": torch.__version__,
                 "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
                 "cpu_threads": torch.get_num_threads(), "seed": seed, "synthetic_seed": seed + 1, "epochs": epochs,
                 "cpu_epochs": cpu_epochs, "loss_rtol": args.loss_rtol, "ref_rtol": args.ref_rtol, "quick": bool(args.quick),
                 "baby": {"users": folder.data.n_users, "items": folder.data.n_items, "train": folder.data.n_train},
                 "rank_block_users": plan.batch_users,
                 "reference": {k: folder.reference.get(k) for k in ("torch", "machine", "epochs")},
                 "loaded": None, "checks": {}}
    for model in MODELS:
        inputs = folder.inputs(model)
        cfg = train_settings(folder.meta, model, epochs=epochs, seed=seed, eval_every=epochs)
        reset_peak(device)
        state, rank_s, valid = run_model(cfg, inputs, plan, device)
        dev_losses = [float(r["loss"]) for r in state.history]
        cpu_losses = train_losses(cfg, inputs, plan, "cpu", cpu_epochs)
        ref_losses = list(folder.reference.get("losses", {}).get(model, []))
        if folder.reference.get("seed") not in (None, seed):
            ref_losses = []  # stored for another seed: nothing to compare
        train_s = [float(r["train_seconds"]) for r in state.history]
        epoch_s = float(np.median(train_s[1:] if len(train_s) > 1 else train_s))  # epoch 0 pays the CUDA warm-up
        diff_cpu, diff_ref = rel_diff(dev_losses, cpu_losses), rel_diff(dev_losses, ref_losses)
        res[model] = {"losses": dev_losses, "cpu_losses": cpu_losses, "reference_losses": ref_losses[:cpu_epochs],
                      "loss_rel_diff_cpu": diff_cpu, "loss_rel_diff_reference": diff_ref if ref_losses else None,
                      "epoch_s": epoch_s, "epoch_s_all": train_s, "rank_s": rank_s,
                      "valid_recall@20": float(valid.get("recall@20", float("nan"))), "peak_gib": peak_gib(device)}
        res["checks"][f"{model}.loss_vs_cpu"] = bool(diff_cpu <= args.loss_rtol)
        if ref_losses:
            res["checks"][f"{model}.loss_vs_reference"] = bool(diff_ref <= args.ref_rtol)
        res["checks"][f"{model}.losses_finite"] = bool(np.all(np.isfinite(dev_losses)))
        print(json.dumps({model: res[model]}), flush=True)
    for size in sizes:
        tag = f"{size // 1_000_000}M" if size % 1_000_000 == 0 else f"{size // 1000}k" if size % 1000 == 0 else str(size)
        t0 = time.perf_counter()
        data = synthetic_data(folder.data, size, seed + 1)
        gen_s = time.perf_counter() - t0
        entry = {"users": data.n_users, "items": data.n_items, "train": data.n_train, "generate_s": gen_s}
        for model in MODELS:
            inputs = synthetic_inputs(folder, data, model, seed + 1)
            cfg = train_settings(folder.meta, model, epochs=2, seed=seed, eval_every=2)
            plan = folder.plan(data.n_items, args.block_memory_gib)
            reset_peak(device)
            # Projection: a few timed steps at this size x the epoch's steps; an epoch that would
            # not fit the time left is skipped, said so (the ranking pass is not projected).
            step_s = probe_step_seconds(cfg, inputs, device)
            from blast_ray.train.inputs import step_plan_for

            projected = step_s * step_plan_for(cfg, inputs, 1).steps  # the trainer's bounded steps per epoch
            left = args.budget_s - (time.perf_counter() - t_start)
            if projected > left:
                entry[model] = {"skipped": f"projected epoch {projected:.0f}s > {left:.0f}s left of --budget-s",
                                "projected_epoch_s": projected, "step_s": step_s}
                continue
            from blast_ray.train.loop import Worker, train_loop, validate
            from blast_ray.models.graph_backend import get_backend

            state = train_loop(cfg, inputs, plan, worker=Worker(device=device), max_epochs=1)
            model_obj = _model_from(cfg, inputs, state, device)
            _sync(device)
            t1 = time.perf_counter()
            validate(model_obj, cfg, inputs, "valid", plan.eval_ks, plan.batch_users, device, get_backend("torch"))
            _sync(device)
            entry[model] = {"epoch_s": float(state.history[0]["train_seconds"]), "projected_epoch_s": projected, "step_s": step_s,
                            "rank_s": time.perf_counter() - t1, "rank_block_users": plan.batch_users,
                            "peak_gib": peak_gib(device),
                            "loss": float(state.history[0]["loss"])}
            del inputs, state, model_obj
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        res[f"synthetic@{tag}"] = entry
        print(json.dumps({f"synthetic@{tag}": entry}), flush=True)
    res["loaded"] = sorted({m.split(".")[0] for m, mod in sys.modules.items() if mod is not None}
                           & {"ray", "pyspark", "pydantic", "faiss"})
    res["ok"] = bool(all(res["checks"].values()))
    res["total_s"] = time.perf_counter() - t_start
    return res


def probe_step_seconds(cfg, inputs, device: str, steps: int = 3) -> float:
    """Seconds per optimizer step (forward + backward on the pruned graph, one batch) at this size,
    median of ``steps`` after one warm-up step; used only to project an epoch before running it."""
    import torch

    from blast_ray.models.graph_backend import get_backend
    from blast_ray.train.inputs import graph_inputs, model_for

    torch.manual_seed(cfg.seed)
    model = model_for(cfg, inputs).to(device)
    g = graph_inputs(cfg, inputs, get_backend("torch"), device, epoch=0)
    rng = np.random.default_rng(0)
    from blast_ray.train.inputs import step_plan_for

    b = step_plan_for(cfg, inputs, 1).batch_size  # the batch the trainer uses at this size
    times = []
    for _ in range(steps + 1):
        u, p, n = (torch.from_numpy(rng.integers(0, hi, b)).to(device) for hi in
                   (inputs.data.n_users, inputs.data.n_items, inputs.data.n_items))
        _sync(device)
        t0 = time.perf_counter()
        model(g, u, p, n).backward()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def _model_from(cfg, inputs, state, device):
    from blast_ray.models.factory import build_model

    model = build_model(cfg, inputs.data.n_users, inputs.data.n_items, inputs.feature_dims(cfg.model)).to(device)
    model.load_state_dict(state.final_weights())
    return model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true", help="build the data folder here (full project environment)")
    ap.add_argument("--data", default=str(DEFAULT_DIR), help="the data folder (default benchmarks/gpu_data)")
    ap.add_argument("--data-dir", default=str(DEFAULT_SHARED), help="--prepare: the shared real data (../shared/data)")
    ap.add_argument("--max-users", type=int, default=None, help="--prepare: keep the first users only (tests)")
    ap.add_argument("--ref-epochs", type=int, default=2, help="--prepare: reference CPU epochs stored")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cpu-epochs", type=int, default=2)
    ap.add_argument("--sizes", default=None, help="synthetic interaction counts (default 3M,10M; --quick: 30k; none: skip)")
    ap.add_argument("--seed", type=int, default=None, help="default: train.seed of the folder (2024)")
    ap.add_argument("--loss-rtol", type=float, default=LOSS_RTOL, help="CUDA vs CPU, same process (see LOSS_RTOL)")
    ap.add_argument("--ref-rtol", type=float, default=REF_RTOL, help="vs the --prepare losses (see REF_RTOL)")
    ap.add_argument("--block-memory-gib", type=float, default=None,
                    help="full-ranking block budget (default: evaluate.block_memory_gib of the folder, 1 GiB)")
    ap.add_argument("--budget-s", type=float, default=360.0, help="skip synthetic runs projected past this (s since start)")
    ap.add_argument("--quick", action="store_true", help="2 epochs, 1 CPU epoch, one 30k synthetic size")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.prepare:
        summary = prepare(Path(args.data), Path(args.data_dir), args.max_users, args.ref_epochs)
        print("PREPARED " + json.dumps(summary), flush=True)
        return
    res = check(args)
    print("RESULT " + json.dumps(res), flush=True)
    if not res["ok"]:
        raise SystemExit(f"gpu_check: a check failed: {[k for k, v in res['checks'].items() if not v]}")


if __name__ == "__main__":
    main()
