"""Full-ranking top-K metrics (MMRec protocol), vectorised torch, in user batches (a leaf module:
imports only numpy, scipy and torch; the masking RULE lives in :mod:`blast_ray.ranking.scoring`).

Protocol: score every item for every evaluated user, mask the user's known items (train; for the
test split train + valid, as MMRec does) to -inf, take the top max(K); Recall@K = hits / |T_u|,
Precision@K = hits / K, NDCG@K = DCG / IDCG with IDCG over min(|T_u|, K), MAP@K = sum_k
prec@k * rel_k / min(|T_u|, K). Averages over users with at least one target item. Never an
M x N dense matrix: ``batch_users`` rows at a time.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

METRICS = ("recall", "ndcg", "precision", "map")


def topk_items(
    user_repr: torch.Tensor, item_repr: torch.Tensor, users: np.ndarray, mask: sp.csr_matrix | None, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (scores, item indices) for ``users``: scores = h_u . f_i with ``mask[u]`` items at -inf."""
    scores = user_repr[torch.as_tensor(users, dtype=torch.long)] @ item_repr.T
    if mask is not None:
        sub = mask[users].tocoo()
        scores[torch.from_numpy(sub.row.astype(np.int64)), torch.from_numpy(sub.col.astype(np.int64))] = -torch.inf
    k = min(k, item_repr.shape[0])
    return torch.topk(scores, k, dim=1)


def hit_matrix(topk: torch.Tensor, users: np.ndarray, target: sp.csr_matrix) -> torch.Tensor:
    """(B, K) bool: whether the k-th ranked item of each user is in its target set."""
    sub = target[users]
    b, k = topk.shape
    # Membership test by composite key search (vectorised, no dense B x N).
    rows = np.repeat(np.arange(b, dtype=np.int64), np.diff(sub.indptr))
    keys = rows * target.shape[1] + sub.indices.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    q = (np.arange(b, dtype=np.int64)[:, None] * target.shape[1] + topk.cpu().numpy()).ravel()
    if keys.size == 0:
        return torch.zeros(b, k, dtype=torch.bool)
    pos = np.searchsorted(keys, q)
    hit = keys[np.minimum(pos, keys.size - 1)] == q
    return torch.from_numpy(hit.reshape(b, k))


def metrics_from_hits(hits: torch.Tensor, n_targets: torch.Tensor, ks: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Per-user metric sums from a (B, Kmax) hit matrix and (B,) target counts (all > 0).

    Returns {"recall@k": (B,), ...} per-user values (float64).

    >>> h = torch.tensor([[True, False, True]]); n = torch.tensor([2])
    >>> round(float(metrics_from_hits(h, n, (3,))["recall@3"][0]), 4)
    1.0
    """
    hits = hits.double()
    n = n_targets.double()
    kmax = hits.shape[1]
    discounts = 1.0 / torch.log2(torch.arange(2, kmax + 2, dtype=torch.float64))
    cum_hits = hits.cumsum(1)
    ranks = torch.arange(1, kmax + 1, dtype=torch.float64)
    prec_at = cum_hits / ranks
    out = {}
    for k in ks:
        kk = min(k, kmax)
        h = hits[:, :kk]
        nh = h.sum(1)
        out[f"recall@{k}"] = nh / n
        out[f"precision@{k}"] = nh / k
        dcg = (h * discounts[:kk]).sum(1)
        ideal_len = torch.clamp(n, max=k).long()
        ideal_disc = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
        cum_disc = torch.cat([torch.zeros(1, dtype=torch.float64), ideal_disc.cumsum(0)])
        idcg = cum_disc[ideal_len]
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"map@{k}"] = (prec_at[:, :kk] * h).sum(1) / torch.clamp(n, max=k)
    return out


def evaluate_ranking(
    user_repr: torch.Tensor,
    item_repr: torch.Tensor,
    target: sp.csr_matrix,
    mask: sp.csr_matrix | None,
    ks: tuple[int, ...] = (5, 10, 20, 50),
    batch_users: int = 4096,
) -> dict[str, float]:
    """Mean Recall/NDCG/Precision/MAP@K over users with >= 1 target item.

    user_repr (M, d), item_repr (N, d): final representations; target: M x N CSR of held-out
    items; mask: M x N CSR of items never to rank (train, or train + valid for test).
    Returns {"recall@20": ..., ..., "n_users": evaluated user count}.
    """
    target = sp.csr_matrix(target)
    n_t = np.diff(target.indptr)
    users_all = np.flatnonzero(n_t > 0)
    kmax = max(ks)
    sums = {f"{m}@{k}": 0.0 for m in METRICS for k in ks}
    with torch.no_grad():
        for start in range(0, len(users_all), batch_users):
            users = users_all[start : start + batch_users]
            _, top = topk_items(user_repr, item_repr, users, mask, kmax)
            hits = hit_matrix(top, users, target)
            per_user = metrics_from_hits(hits, torch.from_numpy(n_t[users]), ks)
            for name, v in per_user.items():
                sums[name] += float(v.sum())
    n = max(len(users_all), 1)
    out = {name: s / n for name, s in sums.items()}
    out["n_users"] = int(len(users_all))
    return out
