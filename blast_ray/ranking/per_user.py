"""Per-user full-ranking results: the evaluation protocol of
:func:`blast_ray.ranking.scoring.score_split` (same mask, same metrics), kept per user instead of
averaged. The evaluate stage stores them for every model it scores (``per_user.parquet``); the
report groups them by user activity.
"""

from __future__ import annotations

import numpy as np
import torch

from blast_ray.ranking.metrics import hit_matrix, metrics_from_hits, topk_items
from blast_ray.ranking.scoring import known_items

PER_USER_METRICS = ("recall", "ndcg")


def per_user_metrics(h_u: torch.Tensor, f_i: torch.Tensor, data, split: str, ks,
                     batch_users: int = 2048) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(users with a ``split`` target (U,) int64, {"recall@k": (U,), "ndcg@k": (U,) for k in ks}).

    ``h_u`` (M, d), ``f_i`` (N, d): the model's representations (score = h_u . f_i); ``ks``: an int
    or a tuple of cutoffs. The mean of each array over the users equals that metric of
    :func:`~blast_ray.ranking.scoring.score_split`. Scores ``batch_users`` users at a time
    (memory: batch_users x N floats)."""
    ks = (int(ks),) if isinstance(ks, (int, np.integer)) else tuple(int(k) for k in ks)
    target = getattr(data, split)
    mask = known_items(data, split)
    users = np.flatnonzero(np.diff(target.indptr) > 0).astype(np.int64)
    names = [f"{m}@{k}" for k in ks for m in PER_USER_METRICS]
    out: dict[str, list] = {n: [] for n in names}
    for s in range(0, len(users), batch_users):
        b = users[s:s + batch_users]
        _, top = topk_items(h_u, f_i, b, mask, max(ks))
        m = metrics_from_hits(hit_matrix(top, b, target), torch.from_numpy(np.diff(target.indptr)[b]), ks)
        for name in names:
            out[name].append(m[name].numpy().astype(np.float64))
    return users, {n: (np.concatenate(v) if v else np.zeros(0)) for n, v in out.items()}
