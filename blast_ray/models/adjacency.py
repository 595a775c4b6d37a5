"""User-item adjacency construction and FREEDOM's degree-sensitive edge pruning (method section 2)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int):
    """COO (rows, cols, values) of D^-1/2 A D^-1/2 for A = [[0, R], [R^T, 0]] over the given edges.

    Nodes 0..n_users-1 are users, n_users.. are items. Zero-degree nodes have no entries.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    du = np.bincount(users, minlength=n_users).astype(np.float64)
    di = np.bincount(items, minlength=n_items).astype(np.float64)
    w = 1.0 / np.sqrt(du[users] * di[items])
    rows = np.concatenate([users, items + n_users])
    cols = np.concatenate([items + n_users, users])
    vals = np.concatenate([w, w]).astype(np.float32)
    return torch.from_numpy(rows), torch.from_numpy(cols), torch.from_numpy(vals)


def prune_edges(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, prune_ratio: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Degree-sensitive edge pruning: keep int(|E| (1 - rho)) edges sampled without replacement
    with p proportional to 1/sqrt(d_u d_i). Deterministic in ``seed`` so every worker of an epoch
    gets the identical graph. Returns the kept (users, items).

    >>> u, i = prune_edges(np.array([0, 0, 1]), np.array([0, 1, 1]), 2, 2, 0.5, seed=1)
    >>> len(u)
    1
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    keep = int(len(users) * (1.0 - prune_ratio))
    if prune_ratio <= 0 or keep >= len(users):
        return users, items
    du = np.bincount(users, minlength=n_users).astype(np.float64)
    di = np.bincount(items, minlength=n_items).astype(np.float64)
    p = 1.0 / np.sqrt(du[users] * di[items])
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.multinomial(torch.from_numpy(p), keep, replacement=False, generator=gen).numpy()
    return users[idx], items[idx]


def normalized_square(m: sp.spmatrix):
    """COO (rows, cols, values) of a scipy matrix, as torch tensors (values already normalized)."""
    c = sp.coo_matrix(m)
    return torch.from_numpy(c.row.astype(np.int64)), torch.from_numpy(c.col.astype(np.int64)), torch.from_numpy(c.data.astype(np.float32))
