"""Metrics against hand-computed values (tiny example incl. |T_u| < K and users without targets)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from blast_ray.ranking.metrics import evaluate_ranking


def test_metrics_hand_computed():
    # Item scores rank 4 > 3 > 2 > 1 > 0 for every user; user 0 has item 4 masked (train).
    users = torch.ones(3, 1)
    items = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    mask = sp.csr_matrix(([1.0], ([0], [4])), shape=(3, 5))
    # user 0 targets {3, 0} (ranks 1 and 4); user 1 target {4} (rank 1); user 2: none (not averaged)
    target = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 1], [3, 0, 4])), shape=(3, 5))
    m = evaluate_ranking(users, items, target, mask, ks=(1, 2, 5), batch_users=2)
    assert m["n_users"] == 2
    assert m["recall@1"] == pytest.approx((0.5 + 1) / 2)
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["precision@2"] == pytest.approx((0.5 + 0.5) / 2)
    idcg2 = 1 + 1 / np.log2(3)
    assert m["ndcg@2"] == pytest.approx((1 / idcg2 + 1.0) / 2)
    # user 0 @5: hits at ranks 1, 4 -> DCG 1 + 1/log2(5); IDCG over min(2, 5) = 2 items
    assert m["ndcg@5"] == pytest.approx(((1 + 1 / np.log2(5)) / idcg2 + 1.0) / 2)
    assert m["map@5"] == pytest.approx(((1 + 2 / 4) / 2 + 1.0) / 2)
    # user 1 has |T_u| = 1 < K = 2: IDCG over one item, MAP normalised by 1
    assert m["map@2"] == pytest.approx((0.5 + 1.0) / 2)


def test_mask_removes_train_items():
    users = torch.ones(1, 1)
    items = torch.tensor([[3.0], [2.0], [1.0]])
    target = sp.csr_matrix(([1.0], ([0], [1])), shape=(1, 3))
    unmasked = evaluate_ranking(users, items, target, None, ks=(1,))
    masked = evaluate_ranking(users, items, target, sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 3)), ks=(1,))
    assert unmasked["recall@1"] == 0.0 and masked["recall@1"] == 1.0
