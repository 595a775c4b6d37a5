"""One trainer for every model: epochs of BPR over (u, i, j) triples, per-epoch edge pruning,
full-ranking validation, early stopping, checkpoints; single process or a DDP worker.

The epoch loop (:func:`train_worker_loop`) is the same code in both paths: in the single-process
path it runs here; under Ray Train it is the body of ``train_loop_per_worker`` (see
``ray_trainer.py``), with ``rank``/``world`` from the Train context and DDP (gloo on CPU, nccl on
GPU) averaging gradients. Each worker trains on its shard ``perm[rank::world]`` of the epoch's
shuffled triples; the permutation and the pruned graph come from ``(seed, epoch)`` alone, so every
worker sees the same ones.
"""

from __future__ import annotations

import copy
import io
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch

from blast_ray.config import TrainConfig
from blast_ray.data.interactions import InteractionData
from blast_ray.evaluate.metrics import evaluate_ranking
from blast_ray.models import MODELS, GraphInputs
from blast_ray.models.adjacency import normalized_adjacency, normalized_square, prune_edges
from blast_ray.models.graph_backend import get_backend
from blast_ray.train.negatives import sample_negatives

log = logging.getLogger("blast_ray.train")

GRAPH_MODELS = ("lightgcn", "freedom", "blast")
PRUNED_MODELS = ("freedom", "blast")


@dataclass
class TrainInputs:
    """Everything a training run reads (picklable: it is shipped to Ray Train workers).

    data: interactions; features: name -> (rows, dim) float32 arrays (item_text, item_visual,
    user_text); item_graph / user_graph: normalized S_I (N x N) / S_U (M x M) or None;
    extra_users / extra_items: augmented positive pairs H (or None); neg_exclude: the per-user
    exclusion set for negatives (train R, or R + G); None means train R.
    """

    data: InteractionData
    features: dict[str, np.ndarray] = field(default_factory=dict)
    item_graph: sp.csr_matrix | None = None
    user_graph: sp.csr_matrix | None = None
    extra_users: np.ndarray | None = None
    extra_items: np.ndarray | None = None
    neg_exclude: sp.csr_matrix | None = None

    def used_modalities(self, model: str) -> dict[str, Any]:
        """Which side inputs this model will actually use (for the log and the manifest)."""
        if model not in PRUNED_MODELS:
            return {"features": [], "item_graph": False, "user_graph": False}
        feats = [f for f in sorted(self.features) if f != "user_text" or model == "blast"]
        return {
            "features": feats,
            "item_graph": self.item_graph is not None,
            "user_graph": model == "blast" and self.user_graph is not None,
        }


def build_model(cfg: TrainConfig, inputs: TrainInputs) -> torch.nn.Module:
    used = inputs.used_modalities(cfg.model)
    dims = {f: int(inputs.features[f].shape[1]) for f in used["features"]}
    return MODELS[cfg.model](
        inputs.data.n_users,
        inputs.data.n_items,
        embedding_dim=cfg.embedding_dim,
        n_layers_ui=cfg.n_layers_ui,
        n_layers_ii=cfg.n_layers_ii,
        n_layers_uu=cfg.n_layers_uu,
        reg_weight=cfg.reg_weight,
        user_reg_weight=cfg.user_reg_weight,
        l2_weight=cfg.l2_weight,
        feature_dims=dims,
    )


def graph_inputs(cfg: TrainConfig, inputs: TrainInputs, backend, device, epoch: int | None) -> GraphInputs:
    """The graphs for one forward: epoch=None -> the full A (evaluation); else pruned for that epoch."""
    d = inputs.data
    g = GraphInputs(backend=backend)
    if cfg.model not in GRAPH_MODELS:
        return g
    u, i = d.train_pairs()
    if epoch is not None and cfg.model in PRUNED_MODELS and cfg.prune_ratio > 0:
        u, i = prune_edges(u, i, d.n_users, d.n_items, cfg.prune_ratio, seed=cfg.seed * 100003 + epoch)
    n = d.n_users + d.n_items
    g.ui = backend.build(*normalized_adjacency(u, i, d.n_users, d.n_items), (n, n), device)
    used = inputs.used_modalities(cfg.model)
    if used["item_graph"]:
        g.ii = backend.build(*normalized_square(inputs.item_graph), inputs.item_graph.shape, device)
    if used["user_graph"]:
        g.uu = backend.build(*normalized_square(inputs.user_graph), inputs.user_graph.shape, device)
    g.features = {f: torch.as_tensor(inputs.features[f], dtype=torch.float32, device=device) for f in used["features"]}
    return g


def epoch_triples(inputs: TrainInputs, seed: int, epoch: int, rank: int, world: int):
    """This worker's (users, pos, neg) for an epoch: shuffled positives (train + augmented) sharded
    ``[rank::world]``, one negative each drawn outside the exclusion set."""
    u, i = inputs.data.train_pairs()
    if inputs.extra_users is not None and len(inputs.extra_users):
        u = np.concatenate([u, inputs.extra_users.astype(np.int64)])
        i = np.concatenate([i, inputs.extra_items.astype(np.int64)])
    perm = np.random.default_rng([seed, epoch]).permutation(len(u))[rank::world]
    users, pos = u[perm], i[perm]
    exclude = inputs.neg_exclude if inputs.neg_exclude is not None else inputs.data.train
    neg = sample_negatives(users, exclude, np.random.default_rng([seed, epoch, rank, 1]))
    return users, pos, neg


def evaluate_model(model, cfg: TrainConfig, inputs: TrainInputs, backend, device, split: str, ks, batch_users: int):
    """Full-ranking metrics of ``split`` ('valid': mask train; 'test': mask train + valid, MMRec)."""
    model.eval()
    with torch.no_grad():
        g = graph_inputs(cfg, inputs, backend, device, epoch=None)
        h_u, f_i = model.representations(g)
    model.train()
    d = inputs.data
    if split == "valid":
        return evaluate_ranking(h_u, f_i, d.valid, d.train, ks, batch_users)
    mask = (d.train + d.valid).tocsr()
    return evaluate_ranking(h_u, f_i, d.test, mask, ks, batch_users)


def progress_enabled(setting: Any, stream=None) -> bool:
    """``train.progress``: True/False force the tqdm bar on/off; "auto" shows it only when
    ``stream`` (default stderr) is a terminal, so logs of batch jobs stay free of bar redraws."""
    if setting == "auto":
        stream = stream if stream is not None else sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)())
    return bool(setting)


def _progress_bar(cfg: TrainConfig, start_epoch: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=cfg.epochs, initial=start_epoch, desc=f"train {cfg.model}", unit="epoch",
                file=sys.stderr, disable=not enabled, dynamic_ncols=True, leave=True)


def state_to_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def state_from_bytes(data: bytes) -> dict[str, Any]:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def train_worker_loop(
    cfg: TrainConfig,
    inputs: TrainInputs,
    *,
    ks: tuple[int, ...] = (20,),
    batch_users: int = 4096,
    rank: int = 0,
    world: int = 1,
    ddp_model: torch.nn.Module | None = None,
    model: torch.nn.Module | None = None,
    resume_state: dict[str, Any] | None = None,
    init_state: dict[str, Any] | None = None,
    init_source: str = "",
    save_state: Callable[[dict[str, Any], dict[str, float]], None] | None = None,
    device: str = "cpu",
    max_epochs: int | None = None,
) -> dict[str, Any]:
    """Run epochs until ``cfg.epochs``/early stop; returns the final training state dict
    (model, optimizer, epoch, best metric, best_state, history, RNG state).

    ``init_state``: model weights to start from (warm start; the optimizer starts fresh); ignored
    when ``resume_state`` (a checkpoint of this very run) is given, which always wins.
    ``save_state(state, epoch_metrics)`` is called once per epoch (checkpointing hook);
    ``max_epochs`` stops after that many epochs of THIS call (used by tests to simulate a crash).
    A tqdm bar over epochs is shown on rank 0 per ``cfg.progress`` (see :func:`progress_enabled`).
    """
    torch.manual_seed(cfg.seed)
    backend = get_backend(cfg.graph_backend)
    model = model if model is not None else build_model(cfg, inputs)
    model.to(device)
    runner = ddp_model if ddp_model is not None else model
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state = {"epoch": 0, "best": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": [], "best_state": None}
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        opt.load_state_dict(resume_state["optimizer"])
        torch.set_rng_state(resume_state["torch_rng"])
        state.update({k: resume_state[k] for k in state})
        if rank == 0:
            log.info("resumed from checkpoint at epoch %d (best valid recall@20 %.4f)", state["epoch"], state["best"])
    elif init_state is not None:
        # In place on every rank: DDP holds these very parameter tensors, so all replicas agree.
        model.load_state_dict(init_state)
        if rank == 0:
            log.info("warm start from %s (optimizer fresh)", init_source or "given weights")
    bar = _progress_bar(cfg, state["epoch"], rank == 0 and progress_enabled(getattr(cfg, "progress", "auto")))
    select = "recall@20"
    eval_ks = tuple(sorted(set(ks) | {20}))
    done_here = 0
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"]
        t0 = time.perf_counter()
        g = graph_inputs(cfg, inputs, backend, device, epoch=epoch)
        users, pos, neg = epoch_triples(inputs, cfg.seed, epoch, rank, world)
        tu, tp, tn = (torch.from_numpy(a).to(device) for a in (users, pos, neg))
        # Equal batch counts on every worker (DDP needs the same number of all-reduces).
        per_worker = int(np.ceil(len(inputs.data.train_pairs()[0]) / world)) if world > 1 else len(users)
        n_batches = max(1, int(np.ceil(per_worker / cfg.batch_size)))
        total = 0.0
        for b in range(n_batches):
            sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
            if tu[sl].numel() == 0:
                sl = slice(0, cfg.batch_size)  # a short shard repeats its first batch
            loss = runner(g, tu[sl], tp[sl], tn[sl])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        train_s = time.perf_counter() - t0
        row = {"epoch": epoch, "loss": total / n_batches, "train_seconds": train_s, "triples": int(len(users))}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            t1 = time.perf_counter()
            valid = evaluate_model(model, cfg, inputs, backend, device, "valid", eval_ks, batch_users)
            row["eval_seconds"] = time.perf_counter() - t1
            row.update({f"valid.{k}": v for k, v in valid.items() if k != "n_users"})
            if valid[select] > state["best"]:
                state.update(best=valid[select], best_epoch=epoch, bad_epochs=0)
                state["best_state"] = copy.deepcopy(model.state_dict())
            else:
                state["bad_epochs"] += 1
        row["seconds"] = time.perf_counter() - t0
        state["history"].append(row)
        state["epoch"] = epoch + 1
        if rank == 0:
            log.debug(
                "epoch %d loss %.4f valid recall@20 %s (best %.4f @ %d) %.1fs",
                epoch, row["loss"], f"{row.get('valid.recall@20', float('nan')):.4f}", state["best"], state["best_epoch"], row["seconds"],
            )
            bar.set_postfix(loss=f"{row['loss']:.4f}", recall20=f"{row.get('valid.recall@20', float('nan')):.4f}",
                            best=f"{state['best']:.4f}@{state['best_epoch']}", refresh=False)
            bar.update(1)
        full = dict(state, model=model.state_dict(), optimizer=opt.state_dict(), torch_rng=torch.get_rng_state(), config=cfg.model_dump())
        if save_state is not None:
            save_state(full, row)
        done_here += 1
        if max_epochs is not None and done_here >= max_epochs:
            break
    bar.close()
    return dict(state, model=model.state_dict(), optimizer=opt.state_dict(), torch_rng=torch.get_rng_state(), config=cfg.model_dump())


def fit(
    cfg: TrainConfig,
    inputs: TrainInputs,
    *,
    store=None,
    checkpoint_parts: tuple[str, ...] | None = None,
    ks: tuple[int, ...] = (20,),
    batch_users: int = 4096,
    max_epochs: int | None = None,
    init_state: dict[str, Any] | None = None,
    init_source: str = "",
) -> dict[str, Any]:
    """Train ``cfg.model``; resumes from the latest checkpoint under ``checkpoint_parts`` if any,
    else starts from ``init_state`` (warm start weights, see :func:`blast_ray.train.warm_start.load_warm_start`)
    when given, else from a fresh initialisation.

    num_workers == 1: plain single process (checkpoints through :class:`StoreCheckpoints`);
    num_workers > 1: Ray Train (``ray_trainer.fit_ray``) with its checkpoint API in the same place.
    Returns the final training state dict (``best_state`` = weights of the best validation epoch).
    """
    used = inputs.used_modalities(cfg.model)
    log.debug("training %s on %d users x %d items; side inputs used: %s%s", cfg.model, inputs.data.n_users,
             inputs.data.n_items, used, " (ID-only)" if cfg.model in PRUNED_MODELS and not (used["features"] or used["item_graph"] or used["user_graph"]) else "")
    if cfg.num_workers > 1:
        from blast_ray.train.ray_trainer import fit_ray

        if store is None or checkpoint_parts is None:
            raise ValueError("multi-worker training needs a store and checkpoint_parts for Ray Train checkpoints")
        return fit_ray(cfg, inputs, storage_path=store.path(*checkpoint_parts[:-1]), name=checkpoint_parts[-1],
                       storage_filesystem=store.fs, ks=ks, batch_users=batch_users,
                       init_state=init_state, init_source=init_source)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ckpt = None
    resume = None
    if store is not None and checkpoint_parts is not None:
        from blast_ray.train.checkpoints import StoreCheckpoints

        ckpt = StoreCheckpoints(store, *checkpoint_parts, "single")
        resume = ckpt.load_latest()
    return train_worker_loop(cfg, inputs, ks=ks, batch_users=batch_users, resume_state=resume,
                             init_state=init_state, init_source=init_source,
                             save_state=ckpt.save if ckpt else None, max_epochs=max_epochs)


def final_outputs(cfg: TrainConfig, inputs: TrainInputs, state: dict[str, Any], ks, batch_users: int):
    """Model at its best validation epoch -> (model, h_u, f_i, valid metrics, test metrics)."""
    model = build_model(cfg, inputs)
    model.load_state_dict(state["best_state"] if state.get("best_state") is not None else state["model"])
    backend = get_backend(cfg.graph_backend)
    valid = evaluate_model(model, cfg, inputs, backend, "cpu", "valid", ks, batch_users)
    test = evaluate_model(model, cfg, inputs, backend, "cpu", "test", ks, batch_users)
    model.eval()
    with torch.no_grad():
        h_u, f_i = model.representations(graph_inputs(cfg, inputs, backend, "cpu", epoch=None))
    return model, h_u.detach().numpy(), f_i.detach().numpy(), valid, test
