"""sample_negatives on real Baby train data: never an excluded item, roughly uniform, clear errors."""

import numpy as np
import pytest
import scipy.sparse as sp

from blast_ray.etl.readers import read_lattice_split
from blast_ray.train.negatives import sample_negatives


def test_negatives_avoid_train_items(dataset):
    d = read_lattice_split(dataset("amazon-baby-5core"))
    u, _ = d.train_pairs()
    neg = sample_negatives(u, d.train, np.random.default_rng(0))
    assert neg.shape == u.shape and neg.min() >= 0 and neg.max() < d.n_items
    assert np.asarray(d.train[u, neg]).ravel().sum() == 0


def test_small_allowed_set_is_exact_and_uniform():
    n = 50
    ex = sp.csr_matrix(np.ones((1, n)))
    ex[0, 7] = 0
    ex[0, 9] = 0
    ex.eliminate_zeros()
    neg = sample_negatives(np.zeros(4000, dtype=np.int64), ex, np.random.default_rng(1), max_rounds=2)
    assert set(neg.tolist()) == {7, 9}
    assert 0.45 < (neg == 7).mean() < 0.55


def test_user_with_nothing_allowed_fails_clearly():
    with pytest.raises(ValueError, match="user 1 has no allowed negative"):
        sample_negatives(np.array([0, 1]), sp.csr_matrix(np.array([[1, 0], [1, 1]])), np.random.default_rng(0))


def test_membership_by_sorted_queries_equals_the_matrix(dataset):
    """``keys_contain`` (the sampler's membership test, shared with the metrics' hit matrix) searches
    its queries in sorted order (for the cache) and puts the answers back in query order: on real Baby train data, every answer equals the matrix's own entry, for
    stored pairs, random pairs and repeated pairs in shuffled order; an empty matrix excludes nothing."""
    from blast_ray.ranking.metrics import csr_keys, keys_contain

    d = read_lattice_split(dataset("amazon-baby-5core"))
    rng = np.random.default_rng(3)
    u, i = d.train_pairs()
    users = np.concatenate([u[:5000], rng.integers(0, d.n_users, 20000), u[:5000]])
    items = np.concatenate([i[:5000], rng.integers(0, d.n_items, 20000), i[:5000]])
    perm = rng.permutation(len(users))
    users, items = users[perm], items[perm]
    got = keys_contain(csr_keys(d.train), users * d.n_items + items)
    expected = np.asarray(d.train[users, items]).ravel() != 0
    assert got.sum() >= 10000 and (got == expected).all()
    empty = sp.csr_matrix((3, 4))
    assert not keys_contain(csr_keys(empty), np.array([0 * 4 + 1, 2 * 4 + 3])).any()
