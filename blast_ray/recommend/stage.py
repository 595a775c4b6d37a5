"""The recommend stage: top-K unseen items per user with scores, through Ray Data.

Users are sharded into blocks (``ray.data.range`` with ``recommend.batch_users`` rows each) that
the actor pool (``recommend.num_actors``) scores in parallel. Each actor memory-maps the train
output's user and item representations (:func:`blast_ray.train.artifacts.mmap_embeddings`; an S3
output is copied once per node), reads only its block's user rows, and scores the items in
column blocks sized from ``recommend.block_memory_gib`` with a running top-K merge
(:func:`blast_ray.ranking.metrics.topk_items_blocked`; exact), masking the items the user has
already seen (:func:`blast_ray.ranking.scoring.known_items` of split ``all``: train + valid +
test). With ``recommend.use_gpu`` each actor holds one GPU and scores there with torch (the item
table copied to the device once). Output: partitioned Parquet (:mod:`blast_ray.recommend.artifacts`)
with the raw user/item ids and the item titles joined in per block: the driver reads only the
id/title columns of the ETL users/items tables into idx-indexed arrays (a few MB even at millions
of items) and broadcasts them once through the object store, as it does the seen-items CSR (numpy
buffers: zero-copy for the actors of a node); no join of the full recommendation table happens.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from blast_ray.recommend import artifacts

log = logging.getLogger("blast_ray.recommend")


def ray_get(ref):
    """The seen-items CSR travels once through the object store (an ObjectRef), not per actor."""
    import ray

    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


def scoring_device(use_gpu: bool) -> str:
    """"cuda" when ``recommend.use_gpu`` and this process sees a GPU, else "cpu"."""
    import torch

    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


def recommend_block(users: np.ndarray, user_repr, item_repr, seen, top_k: int, max_cells: int, device: str = "cpu"):
    """Top-``top_k`` unseen items of ``users`` (dense indices): (scores (B, K) float32, items (B, K) int64).

    user_repr (M, d) / item_repr (N, d): arrays indexable by rows (read-only memory maps: only
    these users' rows and one item block at a time are read) or tensors already on ``device``;
    seen: M x N CSR of the known items (split ``all``), set to -inf. Items are scored in blocks of
    ``max_cells // B`` (:func:`blast_ray.ranking.metrics.topk_items_blocked`), so no B x N matrix
    exists beyond ``max_cells`` scores."""
    import torch

    from blast_ray.ranking.metrics import topk_items_blocked

    users = np.asarray(users, dtype=np.int64)
    if isinstance(user_repr, torch.Tensor):
        rows = user_repr[torch.as_tensor(users, device=user_repr.device)]
    else:
        rows = torch.from_numpy(np.array(user_repr[users], dtype=np.float32)).to(device)  # these rows only
    with torch.no_grad():
        scores, top = topk_items_blocked(rows, item_repr, seen[users] if seen is not None else None, top_k, max_cells)
    return scores.cpu().numpy(), top.cpu().numpy()


class _ScoreBlock:
    """One scoring actor: the train output's h_u / f_i memory-mapped (:func:`blast_ray.train.
    artifacts.mmap_embeddings`: actors of a node share the pages, none loads the tables whole);
    on a GPU the item table is copied to the device once. Each call scores one block of users."""

    def __init__(self, store, train_parts, seen, top_k: int, id_arrays, max_cells: int, use_gpu: bool):
        import types

        import torch

        from blast_ray.train.artifacts import mmap_embeddings

        self.users, self.items = mmap_embeddings(types.SimpleNamespace(store=store, parts=tuple(train_parts)))
        self.device = scoring_device(use_gpu)
        if self.device != "cpu":
            self.items = torch.from_numpy(np.ascontiguousarray(self.items, dtype=np.float32)).to(self.device)
        self.seen = ray_get(seen)
        self.top_k, self.max_cells = top_k, max_cells
        self.user_ids, self.item_ids, self.titles = ray_get(id_arrays)

    def __call__(self, batch: dict[str, np.ndarray]):
        users = batch["id"].astype(np.int64)  # ray.data.range's column
        scores, top = recommend_block(users, self.users, self.items, self.seen, self.top_k, self.max_cells, self.device)
        return artifacts.recommendation_table(users, top, scores, self.user_ids, self.item_ids, self.titles)


def id_arrays(etl_output, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user_ids (n_users,), item_ids (n_items,), titles (n_items,)): object arrays indexed by the
    dense idx, from the ETL users/items tables (only these columns are read). An index the tables
    do not cover (or a table an ETL output made by hand lacks) keeps None: a null raw id / title in
    the output, never a made-up one; ``run`` counts and logs them."""
    from blast_ray.etl import artifacts as etl_artifacts

    user_ids = np.full(n_users, None, dtype=object)
    item_ids = np.full(n_items, None, dtype=object)
    titles = np.full(n_items, None, dtype=object)
    if etl_artifacts.has_table(etl_output, etl_artifacts.USERS):
        users = etl_artifacts.load_table(etl_output, etl_artifacts.USERS, columns=["user_idx", "user_id"])
        user_ids = etl_artifacts.values_by_index(users, "user_idx", "user_id", n_users)
    if etl_artifacts.has_table(etl_output, etl_artifacts.ITEMS):
        items = etl_artifacts.load_table(etl_output, etl_artifacts.ITEMS, columns=["item_idx", "item_id", "title"])
        item_ids = etl_artifacts.values_by_index(items, "item_idx", "item_id", n_items)
        titles = etl_artifacts.values_by_index(items, "item_idx", "title", n_items)
    return user_ids, item_ids, titles


def run(ctx, out) -> dict[str, Any]:
    from blast_ray.etl.artifacts import load_interactions
    from blast_ray.ranking.scoring import known_items
    from blast_ray.runtime import ensure_ray

    rc = ctx.cfg.recommend
    data = load_interactions(ctx.require("etl"))
    train_out = ctx.require("train")
    seen = known_items(data, "all")
    ids = id_arrays(ctx.require("etl"), data.n_users, data.n_items)
    ray = ensure_ray()
    t0 = time.perf_counter()
    # ray.data.range: user ids are generated inside the blocks, never listed on the driver.
    ds = ray.data.range(data.n_users, override_num_blocks=max(1, -(-data.n_users // rc.batch_users)))
    max_cells = max(1, int(rc.block_memory_gib * 2**30 // 4))  # float32 scores an actor holds at once
    recs = ds.map_batches(
        _ScoreBlock,
        fn_constructor_args=(train_out.store, train_out.parts, ray.put(seen), rc.top_k, ray.put(ids), max_cells,
                             rc.use_gpu),
        batch_size=rc.batch_users,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=rc.num_actors),
        num_cpus=0.5,  # fractional: a pool taking all CPUs deadlocks the read on 2-CPU nodes
        **({"num_gpus": 1} if rc.use_gpu else {}),
    )
    recs.write_parquet(artifacts.recommendations_uri(out))
    n = ray.data.read_parquet(artifacts.recommendations_uri(out)).count()
    missing = {"users_without_raw_id": int(sum(u is None for u in ids[0])),
               "items_without_raw_id": int(sum(i is None for i in ids[1])),
               "items_without_title": int(sum(not t for t in ids[2]))}
    if missing["users_without_raw_id"] or missing["items_without_raw_id"]:
        log.warning("recommend: %d users and %d items have no raw id in the ETL users/items tables; their "
                    "user_id / item_id are null in the output", missing["users_without_raw_id"],
                    missing["items_without_raw_id"])
    return {"row_counts": {"recommendations": int(n), "users": data.n_users},
            "timings": {"recommend_seconds": time.perf_counter() - t0}, "extra": {"top_k": rc.top_k, "use_gpu": rc.use_gpu, "max_cells": max_cells, **missing}}
