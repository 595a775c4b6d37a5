"""Sharded full-ranking evaluation: a split's evaluated users cut into ``evaluate.num_shards``
contiguous shards, each scored by one Ray task (:func:`blast_ray.ranking.metrics.ranking_sums` over
its users only: their representation rows, target rows and mask rows travel, the item table once
through the object store), and the per-shard metric SUMS added, then divided by the user count:
the same metrics as the unsharded path (:func:`blast_ray.ranking.scoring.score_split`), which is
what ``num_shards == 1`` runs, in this process and without Ray.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from blast_ray.ranking.metrics import add_sums, eval_users, metrics_from_sums, ranking_sums
from blast_ray.ranking.scoring import known_items

log = logging.getLogger("blast_ray.evaluate")


def shard_users(users: np.ndarray, num_shards: int) -> list[np.ndarray]:
    """``users`` in at most ``num_shards`` contiguous, non-empty, near-equal shards (in order).

    >>> [s.tolist() for s in shard_users(np.arange(5), 2)]
    [[0, 1, 2], [3, 4]]
    """
    n = max(1, min(int(num_shards), len(users)))
    return [s for s in np.array_split(np.asarray(users, dtype=np.int64), n) if len(s)]


def shard_sums(user_rows: np.ndarray, item_repr: np.ndarray, target_rows, mask_rows, ks: tuple[int, ...],
               block_users: int) -> dict[str, float]:
    """Metric sums of one shard: row r of ``user_rows`` / ``target_rows`` / ``mask_rows`` (CSR) is
    the shard's r-th user (pure function; the body of a Ray task)."""
    users = np.arange(user_rows.shape[0], dtype=np.int64)
    return ranking_sums(torch.from_numpy(np.asarray(user_rows)), torch.from_numpy(np.asarray(item_repr)),
                        target_rows, mask_rows, users, tuple(ks), block_users)


def score_split_sharded(h_u: torch.Tensor, f_i: torch.Tensor, data, split: str, ks, block_users: int,
                        num_shards: int = 1) -> dict[str, float]:
    """Full-ranking metrics of ``split`` ('valid' | 'test'), known items masked as
    :func:`blast_ray.ranking.scoring.known_items` says, over ``num_shards`` Ray tasks (1: here).
    Returns ``evaluate_ranking``'s dict ({"recall@20": ..., "n_users": ...})."""
    if split not in ("valid", "test"):
        raise ValueError(f"score_split_sharded: split must be 'valid' or 'test', got {split!r}")
    target = getattr(data, split).tocsr()
    mask = known_items(data, split)
    users = eval_users(target)
    shards = shard_users(users, num_shards)
    if len(shards) <= 1:
        return metrics_from_sums(ranking_sums(h_u, f_i, target, mask, users, tuple(ks), block_users))
    from blast_ray.runtime import ensure_ray

    ray = ensure_ray()
    task = ray.remote(num_cpus=1)(shard_sums)
    u = h_u.detach().cpu().numpy()
    items_ref = ray.put(np.ascontiguousarray(f_i.detach().cpu().numpy()))
    refs = [task.remote(u[s], items_ref, target[s], mask[s], tuple(ks), block_users) for s in shards]
    parts = ray.get(refs)
    log.debug("evaluate: %s scored in %d shards of %s users", split, len(shards), [len(s) for s in shards])
    return metrics_from_sums(add_sums(parts))


def score_splits_sharded(h_u, f_i, data, ks, block_users: int, num_shards: int = 1) -> tuple[dict, dict]:
    """(valid, test) metrics of :func:`score_split_sharded`."""
    return (score_split_sharded(h_u, f_i, data, "valid", ks, block_users, num_shards),
            score_split_sharded(h_u, f_i, data, "test", ks, block_users, num_shards))
