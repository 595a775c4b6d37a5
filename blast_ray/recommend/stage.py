"""The recommend stage: top-K unseen items per user with scores, through Ray Data.

Users are split into blocks (``recommend.batch_users``); ``map_batches`` scores one block against
all item representations (read once per actor from the train output through
:mod:`blast_ray.train.artifacts`), masks the items the user has already seen
(:func:`blast_ray.ranking.scoring.known_items` of split ``all``: train + valid + test), and writes
partitioned Parquet (:mod:`blast_ray.recommend.artifacts`) with the raw user/item ids and the item
titles joined in per block: the driver reads only the id/title columns of the ETL users/items
tables into idx-indexed arrays (a few MB even at millions of items, far smaller than the
embeddings) and broadcasts them once through the object store; each actor indexes them per block,
so no join of the full recommendation table ever happens.
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


class _ScoreBlock:
    def __init__(self, store, train_parts, seen, top_k: int, id_arrays):
        import types

        import torch

        from blast_ray.train.artifacts import load_embeddings

        users, items = load_embeddings(types.SimpleNamespace(store=store, parts=tuple(train_parts)))
        self.users, self.items = torch.from_numpy(users), torch.from_numpy(items)
        self.seen = ray_get(seen)
        self.top_k = top_k
        self.user_ids, self.item_ids, self.titles = ray_get(id_arrays)

    def __call__(self, batch: dict[str, np.ndarray]):
        from blast_ray.ranking.metrics import topk_items

        users = batch["id"].astype(np.int64)  # ray.data.range's column
        scores, top = topk_items(self.users, self.items, users, self.seen, self.top_k)
        return artifacts.recommendation_table(users, top.numpy(), scores.numpy(),
                                              self.user_ids, self.item_ids, self.titles)


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
        user_ids[users.column("user_idx").to_numpy()] = np.asarray(users.column("user_id").to_pylist(), dtype=object)
    if etl_artifacts.has_table(etl_output, etl_artifacts.ITEMS):
        items = etl_artifacts.load_table(etl_output, etl_artifacts.ITEMS, columns=["item_idx", "item_id", "title"])
        i = items.column("item_idx").to_numpy()
        item_ids[i] = np.asarray(items.column("item_id").to_pylist(), dtype=object)
        titles[i] = np.asarray(items.column("title").to_pylist(), dtype=object)
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
    recs = ds.map_batches(
        _ScoreBlock,
        fn_constructor_args=(train_out.store, train_out.parts, ray.put(seen), rc.top_k, ray.put(ids)),
        batch_size=rc.batch_users,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=rc.num_actors),
        num_cpus=0.5,  # fractional: a pool taking all CPUs deadlocks the read on 2-CPU nodes
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
            "timings": {"recommend_seconds": time.perf_counter() - t0}, "extra": {"top_k": rc.top_k, **missing}}
