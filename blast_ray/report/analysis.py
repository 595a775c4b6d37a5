"""Numbers the report derives from committed outputs: per-user results by activity quartile,
catalogue coverage / novelty / popularity of recommended items, and a user's evaluation top-K.

Pure functions on arrays and CSR matrices (no store access; the report stage reads the outputs
through the stages' artifacts modules and passes them in). Representations follow the ranking
package: a model is (h_u (M, d), f_i (N, d)) torch tensors, score = h_u . f_i.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from blast_ray.ranking.metrics import topk_items
from blast_ray.ranking.per_user import per_user_metrics as ranking_per_user
from blast_ray.ranking.scoring import known_items


def activity_quartiles(train: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Quartile (0..3, 0 = least active) of each of ``users`` by train interactions, ties broken by
    order so the four groups are equal-sized; and the (min, max) train degree of each quartile."""
    deg = np.diff(train.indptr)[users]
    order = np.argsort(deg, kind="stable")
    q = np.empty(len(users), dtype=np.int64)
    q[order] = np.minimum((np.arange(len(users)) * 4) // max(len(users), 1), 3)
    ranges = [(int(deg[q == b].min()), int(deg[q == b].max())) if (q == b).any() else (0, 0) for b in range(4)]
    return q, ranges


def popularity_model(train: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor]:
    """The popularity ranking as (user (M, 1), item (N, 1)) factors: every user ranks items by their
    train interaction count (the evaluate stage's pop baseline, same scores)."""
    pop = np.asarray(train.sum(axis=0)).ravel().astype(np.float32)
    return torch.ones(train.shape[0], 1), torch.from_numpy(pop).unsqueeze(1)


def per_user_metrics(h_u: torch.Tensor, f_i: torch.Tensor, data, split: str, k: int,
                     batch_users: int = 2048) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(users with a ``split`` target, {"recall@k": (U,), "ndcg@k": (U,)}): the evaluation protocol
    of :func:`blast_ray.ranking.scoring.score_split` (same mask), kept per user instead of averaged
    (:func:`blast_ray.ranking.per_user.per_user_metrics` at one cutoff)."""
    return ranking_per_user(h_u, f_i, data, split, (k,), batch_users)


def quartile_table(train: sp.csr_matrix, users: np.ndarray, per_model: dict[str, np.ndarray]) -> list[list]:
    """Rows [quartile label, degree range, n users, model1 mean, model2 mean, ...]."""
    q, ranges = activity_quartiles(train, users)
    rows = []
    for b in range(4):
        sel = q == b
        label = f"Q{b + 1}" + (" (least active)" if b == 0 else " (most active)" if b == 3 else "")
        rows.append([label, f"{ranges[b][0]}-{ranges[b][1]}", int(sel.sum()),
                     *[float(v[sel].mean()) if sel.any() else float("nan") for v in per_model.values()]])
    return rows


def popularity_profile(train: sp.csr_matrix, rec_items: np.ndarray) -> dict[str, float]:
    """Coverage, novelty and popularity of recommended items against the training data.

    ``rec_items``: the item index of every recommendation row (all users x K). Popularity of an item =
    its train interactions; p(i) = popularity / number of users (at least 1 / users). Returns
    coverage (share of the catalogue recommended to anyone), novelty (mean -log2 p(i) over the
    recommendations and, for reference, over the train interactions), mean popularity of recommended
    items vs of train interactions and of the catalogue, and the share of recommendations (and of
    train interactions) going to the 20% most popular items."""
    n_users, n_items = train.shape
    pop = np.asarray(train.sum(axis=0)).ravel().astype(np.float64)
    p = np.maximum(pop, 1.0) / max(n_users, 1)
    rec_items = np.asarray(rec_items, dtype=np.int64)
    train_items = train.tocoo().col
    head = np.zeros(n_items, dtype=bool)
    head[np.argsort(-pop, kind="stable")[: max(1, int(round(0.2 * n_items)))]] = True
    return {
        "items recommended (distinct)": int(np.unique(rec_items).size),
        "catalogue coverage": float(np.unique(rec_items).size / max(n_items, 1)),
        "novelty of recommendations (mean -log2 p)": float(np.mean(-np.log2(p[rec_items]))) if rec_items.size else float("nan"),
        "novelty of train interactions (mean -log2 p)": float(np.mean(-np.log2(p[train_items]))) if train_items.size else float("nan"),
        "mean popularity of recommended items": float(pop[rec_items].mean()) if rec_items.size else float("nan"),
        "mean popularity of train interactions": float(pop[train_items].mean()) if train_items.size else float("nan"),
        "mean popularity of catalogue items": float(pop.mean()) if n_items else float("nan"),
        "share of recommendations from the top-20% items": float(head[rec_items].mean()) if rec_items.size else float("nan"),
        "share of train interactions on the top-20% items": float(head[train_items].mean()) if train_items.size else float("nan"),
    }


def sample_users(train: sp.csr_matrix, test: sp.csr_matrix, n: int = 5) -> np.ndarray:
    """``n`` users with a test item, spread over train activity (evenly spaced in the sorted order,
    from least to most active): deterministic, so two reports of a run show the same people."""
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    if users.size == 0:
        return users
    order = users[np.argsort(np.diff(train.indptr)[users], kind="stable")]
    pick = np.unique(np.linspace(0, order.size - 1, min(n, order.size)).round().astype(int))
    return order[pick]


def evaluation_top(h_u: torch.Tensor, f_i: torch.Tensor, data, user: int, k: int = 10) -> list[tuple[int, float, str]]:
    """One user's top-k under the valid protocol (only train items masked), each (item_idx, score,
    hit) with hit 'valid', 'test' or '' (a held-out item of the user found in the list)."""
    scores, top = topk_items(h_u, f_i, np.array([user]), known_items(data, "valid"), k)
    valid, test = set(data.valid[user].indices.tolist()), set(data.test[user].indices.tolist())
    return [(int(i), float(s), "valid" if int(i) in valid else "test" if int(i) in test else "")
            for i, s in zip(top[0].tolist(), scores[0].tolist())]
