"""What a training worker needs: interactions, side features, kNN graphs, augmented pairs, and
the per-epoch inputs derived from them (the propagation graphs and the shuffled BPR triples).

Everything here is a pure function of (inputs, config, seed, epoch, rank, world): every worker of an
epoch computes the same pruned graph and the same permutation, and shards it ``[rank::world]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from blast_ray.data.interactions import InteractionData
from blast_ray.models import GraphInputs
from blast_ray.models.adjacency import normalized_adjacency, normalized_square, prune_edges
from blast_ray.models.factory import GRAPH_MODELS, PRUNED_MODELS, build_model, used_modalities
from blast_ray.train.negatives import sample_negatives

__all__ = ["GRAPH_MODELS", "PRUNED_MODELS", "StepPlan", "TrainInputs", "allreduce_bytes_per_epoch", "batch_slices",
           "epoch_triples", "graph_inputs", "graph_pairs", "model_for", "n_positives", "parameter_bytes", "step_plan",
           "step_plan_for"]


@dataclass
class TrainInputs:
    """Everything a training run reads (picklable: it is shipped to Ray Train workers).

    data: interactions; features: name -> (rows, dim) float32 arrays (item_text, item_visual,
    user_text); item_graph / user_graph: normalized S_I (N x N) / S_U (M x M) or None;
    extra_users / extra_items: augmented positive pairs H (or None), always extra BPR positives;
    extra_in_graph: H also enters the user-item graph A used for propagation (``augment.add_to_graph``);
    neg_exclude: the per-user exclusion set for negatives (train R, or R + G); None means train R.
    """

    data: InteractionData
    features: dict[str, np.ndarray] = field(default_factory=dict)
    item_graph: sp.csr_matrix | None = None
    user_graph: sp.csr_matrix | None = None
    extra_users: np.ndarray | None = None
    extra_items: np.ndarray | None = None
    neg_exclude: sp.csr_matrix | None = None
    extra_in_graph: bool = False

    def used_modalities(self, model: str) -> dict[str, Any]:
        """Which side inputs this model will actually use (for the log and the manifest)."""
        return used_modalities(model, self.features, self.item_graph is not None, self.user_graph is not None)

    def feature_dims(self, model: str) -> dict[str, int]:
        """name -> dim of the features ``model`` uses."""
        return {f: int(self.features[f].shape[1]) for f in self.used_modalities(model)["features"]}

    def has_extra(self) -> bool:
        return self.extra_users is not None and len(self.extra_users) > 0


def model_for(cfg, inputs: TrainInputs) -> torch.nn.Module:
    """A fresh ``cfg.model`` sized for ``inputs`` (see :func:`blast_ray.models.factory.build_model`)."""
    return build_model(cfg, inputs.data.n_users, inputs.data.n_items, inputs.feature_dims(cfg.model))


def graph_pairs(inputs: TrainInputs) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) edges of the user-item graph A: the train pairs, plus the augmented pairs H
    when ``inputs.extra_in_graph`` (duplicates of a train pair kept once, so A stays binary)."""
    u, i = inputs.data.train_pairs()
    if not (inputs.extra_in_graph and inputs.has_extra()):
        return u, i
    n_items = inputs.data.n_items
    keys = np.concatenate([u.astype(np.int64) * n_items + i, inputs.extra_users.astype(np.int64) * n_items
                           + inputs.extra_items.astype(np.int64)])
    keys = np.unique(keys)  # sorted: a deterministic edge order
    return keys // n_items, keys % n_items


def graph_inputs(cfg, inputs: TrainInputs, backend, device, epoch: int | None,
                 reuse: GraphInputs | None = None) -> GraphInputs:
    """The graphs for one forward: epoch=None -> the full A (evaluation); else pruned for that epoch.

    reuse: this run's full graph (``graph_inputs(..., epoch=None)``), built once per run: its S_I and
    S_U handles and feature tensors are shared instead of rebuilt, and it is returned as it is when
    the epoch's graph is the full one (models without pruning: LightGCN's A never changes), so an
    epoch only builds the pruned A. The user-item adjacency is symmetric, so the backend holds no
    transposed copy of it (``symmetric=True``).
    """
    d = inputs.data
    if cfg.model not in GRAPH_MODELS:
        return GraphInputs(backend=backend)
    pruned = epoch is not None and cfg.model in PRUNED_MODELS and cfg.prune_ratio > 0
    if reuse is not None and not pruned:
        return reuse
    g = GraphInputs(backend=backend)
    u, i = graph_pairs(inputs)
    if pruned:
        u, i = prune_edges(u, i, d.n_users, d.n_items, cfg.prune_ratio, seed=cfg.seed * 100003 + epoch)
    n = d.n_users + d.n_items
    g.ui = backend.build(*normalized_adjacency(u, i, d.n_users, d.n_items), (n, n), device, symmetric=True)
    if reuse is not None:
        g.ii, g.uu, g.features = reuse.ii, reuse.uu, reuse.features
        return g
    used = inputs.used_modalities(cfg.model)
    if used["item_graph"]:
        g.ii = backend.build(*normalized_square(inputs.item_graph), inputs.item_graph.shape, device)
    if used["user_graph"]:
        g.uu = backend.build(*normalized_square(inputs.user_graph), inputs.user_graph.shape, device)
    g.features = {f: torch.as_tensor(inputs.features[f], dtype=torch.float32, device=device) for f in used["features"]}
    return g


def n_positives(inputs: TrainInputs) -> int:
    """Number of BPR positives of one epoch over ALL workers: the train pairs plus the augmented
    pairs H (the length of the permutation that :func:`epoch_triples` shards)."""
    n = int(inputs.data.train.nnz)
    return n + (len(inputs.extra_users) if inputs.has_extra() else 0)


def batch_slices(n_total: int, world: int, batch_size: int) -> list[slice]:
    """The batches of one worker's shard, the same count on every rank (DDP needs the same number
    of all-reduces per epoch).

    n_total: positives of the epoch over all workers (:func:`n_positives`: train + H); rank r's
    shard ``[r::world]`` has ``ceil((n_total - r) / world)`` triples, at most ``ceil(n_total / world)``,
    and the batches cover that largest shard, so every rank consumes all its triples. A shorter shard
    whose last slice comes out empty repeats its first batch (slices past its end are empty:
    the caller maps an empty slice to ``slice(0, batch_size)``). Returns at least one slice.
    """
    per_worker = -(-int(n_total) // max(1, int(world)))
    n_batches = max(1, -(-per_worker // int(batch_size)))
    return [slice(b * batch_size, (b + 1) * batch_size) for b in range(n_batches)]


@dataclass(frozen=True)
class StepPlan:
    """How one epoch is cut into optimizer steps (the same on every rank).

    steps: optimizer steps per epoch on every rank (= DDP all-reduces per epoch), at most
    ``train.max_steps_per_epoch``; batch_size: triples per step per rank (>= ``train.batch_size``,
    grown so that ``steps`` stays under the cap); lr_scale: the factor applied to ``train.lr`` for
    that larger batch (1.0 when the batch is the configured one)."""

    steps: int
    batch_size: int
    lr_scale: float
    base_batch_size: int
    n_total: int
    world: int

    def slices(self) -> list[slice]:
        """This epoch's batch slices of a rank's shard (see :func:`batch_slices`)."""
        return batch_slices(self.n_total, self.world, self.batch_size)


LR_BATCH_SCALINGS = ("linear", "sqrt", "none")


def step_plan(n_total: int, world: int, batch_size: int, max_steps: int, lr_scaling: str = "linear",
              max_lr_scale: float = 8.0, max_batch: int | None = None) -> StepPlan:
    """The steps, batch and learning-rate factor of one epoch: a bounded number of steps, a batch
    that grows with the data.

    Why: every optimizer step propagates the whole graph (O(E)); with a fixed batch the steps per
    epoch grow with E, so an epoch costs O(E^2). Capping the steps at ``max_steps`` makes it
    O(E * max_steps), linear, and also caps the DDP all-reduces per epoch.

    per_worker = ceil(n_total / world) (the largest shard); batch = max(batch_size,
    ceil(per_worker / max_steps)); steps = ceil(per_worker / batch) (<= max_steps; >= 1). Every
    rank covers its whole shard each epoch (train + H, see :func:`batch_slices`).
    lr_scale = min(max_lr_scale, r) with r = batch / batch_size ("linear"), sqrt(batch / batch_size)
    ("sqrt") or 1 ("none"); exactly 1.0 when the batch did not grow. Why linear: Adam's step is about
    lr whatever the gradient's scale, so with 1/r as many steps an epoch moves 1/r as far unless lr
    grows r-fold; measured on Baby (docs/stages/train.md), sqrt lost 3% of BLAST's Recall@20 at a 5.8x
    batch, linear kept it.
    max_batch: ``train.max_batch_size``; a batch above it raises ValueError (one line naming the
    settings and the batch computed) before any training.
    """
    if int(max_steps) < 1:
        raise ValueError(f"train.max_steps_per_epoch must be >= 1, got {max_steps}")
    if lr_scaling not in LR_BATCH_SCALINGS:
        raise ValueError(f"train.lr_batch_scaling must be one of {', '.join(LR_BATCH_SCALINGS)}, got {lr_scaling!r}")
    world = max(1, int(world))
    per_worker = -(-int(n_total) // world)
    batch = max(int(batch_size), -(-per_worker // int(max_steps)))
    steps = max(1, -(-per_worker // batch))
    if max_batch is not None and batch > int(max_batch):
        need = -(-per_worker // int(max_batch))
        raise ValueError(
            f"train.max_steps_per_epoch={max_steps} gives batches of {batch:,} triples per worker "
            f"(ceil({int(n_total):,} positives / {world} workers / {max_steps} steps)), above train.max_batch_size="
            f"{int(max_batch):,}: set train.max_steps_per_epoch >= {need}, add workers, or raise train.max_batch_size")
    ratio = batch / int(batch_size)
    raw = {"sqrt": ratio ** 0.5, "linear": ratio, "none": 1.0}[lr_scaling]
    scale = 1.0 if batch == int(batch_size) else float(min(float(max_lr_scale), raw))
    return StepPlan(steps=steps, batch_size=batch, lr_scale=scale, base_batch_size=int(batch_size),
                    n_total=int(n_total), world=world)


def step_plan_for(cfg, inputs: TrainInputs, world: int) -> StepPlan:
    """:func:`step_plan` for a train config and its inputs (positives = train + H)."""
    return step_plan(n_positives(inputs), world, cfg.batch_size, cfg.max_steps_per_epoch, cfg.lr_batch_scaling,
                     cfg.max_lr_scale, cfg.max_batch_size)


def parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes of the trainable parameters (what DDP all-reduces as gradients every step)."""
    return int(sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad))


def allreduce_bytes_per_epoch(param_bytes: int, steps: int, world: int) -> int:
    """Gradient bytes all-reduced per epoch by dense DDP: ``param_bytes * steps`` when world > 1
    (one all-reduce of every trainable parameter per step; the whole-graph propagation makes every
    embedding row's gradient non-zero, so it is dense), 0 for one worker. The figure is the
    all-reduced payload; a ring all-reduce moves about 2 (world - 1) / world of it per worker."""
    return int(param_bytes) * int(steps) if int(world) > 1 else 0


def epoch_triples(inputs: TrainInputs, seed: int, epoch: int, rank: int, world: int):
    """This worker's (users, pos, neg) for an epoch: shuffled positives (train + augmented) sharded
    ``[rank::world]``, one negative each drawn outside the exclusion set."""
    u, i = inputs.data.train_pairs()
    if inputs.has_extra():
        u = np.concatenate([u, inputs.extra_users.astype(np.int64)])
        i = np.concatenate([i, inputs.extra_items.astype(np.int64)])
    perm = np.random.default_rng([seed, epoch]).permutation(len(u))[rank::world]
    users, pos = u[perm], i[perm]
    exclude = inputs.neg_exclude if inputs.neg_exclude is not None else inputs.data.train
    neg = sample_negatives(users, exclude, np.random.default_rng([seed, epoch, rank, 1]))
    return users, pos, neg
