"""Property tests of blast_ray.train.negatives.sample_negatives on real Scientific data + G."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from blast_ray.augment import false_negative_candidates
from blast_ray.graphs.knn import knn_graph
from blast_ray.train.negatives import sample_negatives
from tests.test_augment import _scientific_slice


@pytest.fixture(scope="module")
def excl(dataset):
    R, feats = _scientific_slice(dataset("amazon-scientific-2018"), 400)
    G = false_negative_candidates(R, [knn_graph(feats, 10)])
    E = sp.csr_matrix(R + G)
    E.data[:] = 1.0
    return R, G, E


def test_never_returns_observed_or_false_negative(excl):
    R, G, E = excl
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(R.shape[0]), 200)
    j = sample_negatives(users, E, rng)
    assert j.shape == users.shape and j.dtype == np.int64
    assert E[users, j].A1.sum() == 0


def test_uniform_over_true_negatives_chi_square(excl):
    _, _, E = excl
    u = int(np.argmax(np.diff(E.indptr)))  # the user with the largest N_u u G_u
    allowed = np.setdiff1d(np.arange(E.shape[1]), E[u].indices)
    n = 200 * allowed.size
    j = sample_negatives(np.full(n, u), E, np.random.default_rng(1))
    counts = np.bincount(j, minlength=E.shape[1])[allowed]
    assert counts.sum() == n
    assert stats.chisquare(counts).pvalue > 1e-3


def test_tiny_allowed_set_fallback_and_empty_error():
    N = 50
    E = sp.lil_matrix((3, N))
    E[0, :] = 1
    E[0, 7] = 0  # one allowed item: rejection sampling almost never hits it
    E[1, :2] = 1
    E[2, :] = 1  # nothing allowed
    E = sp.csr_matrix(E)
    E.eliminate_zeros()
    j = sample_negatives(np.zeros(1000, dtype=np.int64), E, np.random.default_rng(0), max_rounds=2)
    assert (j == 7).all()
    with pytest.raises(ValueError, match="2"):
        sample_negatives(np.array([1, 2]), E, np.random.default_rng(0))
