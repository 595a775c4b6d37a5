"""The report's derived numbers (blast_ray/report/analysis.py) on the real MovieLens-100k
interactions: per-user results agree with the evaluation's averages, quartiles partition the test
users, coverage/novelty/popularity are computed from the recommended items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from blast_ray.data import InteractionData
from blast_ray.ranking.scoring import score_split
from blast_ray.report import analysis


@pytest.fixture(scope="module")
def ml100k(dataset) -> InteractionData:
    df = pd.read_csv(dataset("movielens-100k") / "ml-100k.inter", sep="\t")
    users = df["user_id:token"].astype("category").cat.codes.to_numpy()
    items = df["item_id:token"].astype("category").cat.codes.to_numpy()
    split = np.random.default_rng(0).choice(["train", "valid", "test"], size=len(df), p=[0.8, 0.1, 0.1])
    return InteractionData.from_frame(pd.DataFrame({"user_idx": users, "item_idx": items, "split": split}))


def test_per_user_metrics_average_to_the_evaluation(ml100k):
    g = torch.Generator().manual_seed(0)
    h_u, f_i = torch.randn(ml100k.n_users, 16, generator=g), torch.randn(ml100k.n_items, 16, generator=g)
    f_i += 0.05 * torch.from_numpy(np.asarray(ml100k.train.sum(axis=0)).ravel()).float().unsqueeze(1)  # not flat
    users, per = analysis.per_user_metrics(h_u, f_i, ml100k, "test", 20, batch_users=300)
    ref = score_split(h_u, f_i, ml100k, "test", (20,), 4096)
    assert len(users) == ref["n_users"]
    assert per["recall@20"].mean() == pytest.approx(ref["recall@20"], rel=1e-9)
    assert per["ndcg@20"].mean() == pytest.approx(ref["ndcg@20"], rel=1e-9)
    rows = analysis.quartile_table(ml100k.train, users, {"m": per["recall@20"]})
    assert sum(r[2] for r in rows) == len(users) and max(r[2] for r in rows) - min(r[2] for r in rows) <= 1
    lo = [int(r[1].split("-")[0]) for r in rows]
    assert lo == sorted(lo)  # quartiles ordered by activity
    # the popularity model ranks by train counts: every user's first item is the most popular unseen one
    top = analysis.evaluation_top(*analysis.popularity_model(ml100k.train), ml100k, int(users[0]), 10)
    pop = np.asarray(ml100k.train.sum(axis=0)).ravel()
    assert [s for _, s, _ in top] == sorted((s for _, s, _ in top), reverse=True) and top[0][1] == pytest.approx(
        pop[np.setdiff1d(np.arange(ml100k.n_items), ml100k.train[int(users[0])].indices)].max())
    held = set(ml100k.valid[int(users[0])].indices) | set(ml100k.test[int(users[0])].indices)
    assert all((h != "") == (i in held) for i, _, h in top)


def test_popularity_profile_and_sample_users(ml100k):
    pop = np.asarray(ml100k.train.sum(axis=0)).ravel()
    most = np.argsort(-pop, kind="stable")[:10]
    only_head = analysis.popularity_profile(ml100k.train, np.tile(most, 50))
    assert only_head["items recommended (distinct)"] == 10
    assert only_head["catalogue coverage"] == pytest.approx(10 / ml100k.n_items)
    assert only_head["share of recommendations from the top-20% items"] == 1.0
    assert only_head["mean popularity of recommended items"] == pytest.approx(pop[most].mean())
    tail = np.argsort(pop, kind="stable")[:200]
    spread = analysis.popularity_profile(ml100k.train, tail)
    assert spread["novelty of recommendations (mean -log2 p)"] > only_head["novelty of recommendations (mean -log2 p)"]
    assert 0 < spread["share of train interactions on the top-20% items"] < 1
    picked = analysis.sample_users(ml100k.train, ml100k.test, 5)
    deg = np.diff(ml100k.train.indptr)[picked]
    assert len(picked) == 5 and list(deg) == sorted(deg) and deg[0] < deg[-1]
    assert (np.diff(ml100k.test.indptr)[picked] > 0).all()
