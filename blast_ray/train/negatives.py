"""Vectorised negative sampling with a per-user exclusion set (shared contract)."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from blast_ray.ranking.metrics import csr_keys, keys_contain

log = logging.getLogger(__name__)


def sample_negatives(
    users: np.ndarray,
    exclude: sp.csr_matrix,
    rng: np.random.Generator,
    max_rounds: int = 20,
) -> np.ndarray:
    """One negative item per entry of ``users``: uniform over the items not in the user's row of ``exclude``.

    Objective: j ~ Uniform(I minus exclude[u]) for each u in ``users`` (e.g. exclude = train R, or
    R + G under the negative-sampling restriction of method section 4).

    Parameters
    ----------
    users: int array (B,), user indices in [0, exclude.shape[0]).
    exclude: scipy CSR (M x N); a stored entry (any value) means "never a negative for this user".
    rng: numpy Generator (seeded by the caller; the result is a pure function of its state).
    max_rounds: rounds of vectorised rejection sampling; users still unresolved after them (their
        allowed set is small) get an exact draw among their allowed items.

    Returns
    -------
    int64 array (B,) of item indices.

    Raises ValueError, naming the user, when a user has no allowed item at all.

    Example
    -------
    >>> import scipy.sparse as sp, numpy as np
    >>> ex = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]]))
    >>> sample_negatives(np.array([0, 1, 0]), ex, np.random.default_rng(0)).tolist()
    [2, 0, 2]
    """
    users = np.asarray(users, dtype=np.int64)
    exclude = sp.csr_matrix(exclude)
    if not exclude.has_canonical_format:
        exclude = exclude.copy()
        exclude.sum_duplicates()
    n_users, n_items = exclude.shape
    if users.size == 0:
        return np.empty(0, dtype=np.int64)
    if users.min() < 0 or users.max() >= n_users:
        raise ValueError(f"sample_negatives: a user index is outside [0, {n_users})")
    row_nnz = np.diff(exclude.indptr)
    full = row_nnz[users] >= n_items
    if full.any():
        u = int(users[np.argmax(full)])
        raise ValueError(f"sample_negatives: user {u} has no allowed negative item (all {n_items} items excluded)")
    out = rng.integers(0, n_items, size=users.size, dtype=np.int64)
    keys = csr_keys(exclude)  # once per call, not once per rejection round
    todo = np.flatnonzero(keys_contain(keys, users * n_items + out))
    rounds = 0
    while todo.size and rounds < max_rounds:
        out[todo] = rng.integers(0, n_items, size=todo.size, dtype=np.int64)
        todo = todo[keys_contain(keys, users[todo] * n_items + out[todo])]
        rounds += 1
    if todo.size:
        log.debug("sample_negatives: %d draws resolved exactly after %d rounds", todo.size, rounds)
        # Exact fallback: draw the r-th allowed item, r uniform in [0, n_allowed).
        for k in todo:  # only users whose allowed set is tiny reach here
            u = users[k]
            banned = exclude.indices[exclude.indptr[u] : exclude.indptr[u + 1]]
            allowed = np.setdiff1d(np.arange(n_items), banned, assume_unique=False)
            out[k] = allowed[rng.integers(0, allowed.size)]
    return out
