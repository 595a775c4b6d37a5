"""The split trainer's rules on a real Baby slice: the selection metric (``evaluate.select_metric``,
validation only), the epoch cap report, and ``augment.add_to_graph`` (H enters the graph A)."""

import logging

import numpy as np
import pytest
import torch

from blast_ray.config import TrainConfig
from blast_ray.models.graph_backend import get_backend
from blast_ray.train import EvalPlan, TrainInputs, TrainState, epoch_cap, fit
from blast_ray.etl.readers import read_lattice_split
from blast_ray.train.inputs import graph_inputs, graph_pairs, model_for

N_USERS = 1500


@pytest.fixture(scope="module")
def baby_small(dataset):
    torch.set_num_threads(1)
    return read_lattice_split(dataset("amazon-baby-5core"), max_users=N_USERS)


@pytest.fixture(scope="module")
def ot_pairs(baby_small):
    """Real augmented pairs H: Sinkhorn + top-q over R and G (G from an item kNN graph of an SVD
    co-occurrence feature), as the augment stage computes them."""
    from scipy.sparse.linalg import svds

    from blast_ray.augment.false_negatives import false_negative_candidates
    from blast_ray.augment.sinkhorn import sparse_sinkhorn
    from blast_ray.augment.topq import top_q_cells
    from blast_ray.graphs.knn import knn_graph

    R = baby_small.train.tocsr()
    u, s, _ = svds(R.T.astype(np.float64).tocsr(), k=16)
    G = false_negative_candidates(R, [knn_graph((u * s).astype(np.float32), 10)])
    ot = sparse_sinkhorn(R, G, eps=0.1, tol=1e-6, max_iter=500)
    hu, hi, _ = top_q_cells(ot.f, ot.g, 0.1, R, G, int(0.1 * R.nnz))
    return hu, hi


def test_select_metric_picks_the_epoch_on_validation(baby_small, caplog):
    cfg = TrainConfig(model="lightgcn", epochs=3, lr=0.01, seed=4)
    with caplog.at_level(logging.DEBUG, logger="blast_ray.train"):
        state = fit(cfg, TrainInputs(baby_small), EvalPlan(ks=(20,), select_metric="ndcg@10"))
    assert state.select_metric == "ndcg@10"
    vals = [r["valid.ndcg@10"] for r in state.history]  # the selection k is validated even if not in ks
    assert state.best == max(vals) and state.best_epoch == int(np.argmax(vals))
    assert not any(k.startswith("test.") for r in state.history for k in r)  # never a test metric
    assert any("valid ndcg@10" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="evaluate.select_metric"):
        fit(cfg, TrainInputs(baby_small), EvalPlan(select_metric="auc@20"))


def test_epoch_cap_rule(baby_small, caplog):
    cfg = TrainConfig(model="lightgcn", epochs=2, lr=0.01, seed=4, patience=5)
    with caplog.at_level(logging.WARNING, logger="blast_ray.train"):
        state = fit(cfg, TrainInputs(baby_small))
    cap = epoch_cap(state, cfg)
    # two epochs of LightGCN from scratch: the second is better than the first (still improving)
    assert state.history[1]["valid.recall@20"] > state.history[0]["valid.recall@20"]
    assert cap == {"hit": True, "still_improving": True, "best_epoch": 1, "epochs_run": 2}
    assert any("still improving" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # the rule on other endings of the same run's history
    worse = TrainState(epoch=2, best=state.history[0]["valid.recall@20"], best_epoch=0, bad_epochs=1,
                       history=state.history)
    assert epoch_cap(worse, cfg) == {"hit": True, "still_improving": False, "best_epoch": 0, "epochs_run": 2}
    early = TrainState(epoch=2, best_epoch=0, bad_epochs=1, history=state.history)
    assert epoch_cap(early, TrainConfig(model="lightgcn", epochs=5, patience=1))["hit"] is False
    stopped_at_cap = TrainState(epoch=2, best_epoch=0, bad_epochs=1, history=state.history)
    assert epoch_cap(stopped_at_cap, TrainConfig(model="lightgcn", epochs=2, patience=1))["hit"] is False


def test_add_to_graph_puts_h_into_a(baby_small, ot_pairs):
    hu, hi = ot_pairs
    assert len(hu) > 0
    base = TrainInputs(baby_small, extra_users=hu, extra_items=hi)
    flagged = TrainInputs(baby_small, extra_users=hu, extra_items=hi, extra_in_graph=True)
    u0, i0 = graph_pairs(base)
    u1, i1 = graph_pairs(flagged)
    train = set(zip(*(a.tolist() for a in baby_small.train_pairs())))
    new = set(zip(hu.tolist(), hi.tolist())) - train
    assert set(zip(u0.tolist(), i0.tolist())) == train  # flag off: A is the train graph
    assert set(zip(u1.tolist(), i1.tolist())) == train | new and len(new) > 0
    cfg = TrainConfig(model="lightgcn")
    backend = get_backend("torch")
    a0 = graph_inputs(cfg, base, backend, "cpu", epoch=None).ui
    a1 = graph_inputs(cfg, flagged, backend, "cpu", epoch=None).ui
    assert a0.nnz == 2 * len(train) and a1.nnz == 2 * (len(train) + len(new))  # both directions of A
    # the propagation itself differs: same model weights, different representations
    torch.manual_seed(0)
    model = model_for(cfg, base)
    with torch.no_grad():
        r0 = model.representations(graph_inputs(cfg, base, backend, "cpu", epoch=None))[0]
        r1 = model.representations(graph_inputs(cfg, flagged, backend, "cpu", epoch=None))[0]
    touched = np.unique(hu)
    assert not torch.allclose(r0[touched], r1[touched])


def test_every_rank_consumes_all_its_triples_including_h(baby_small, ot_pairs):
    """Under DDP the batch count must cover train + H: with 2 ranks every rank's batches consume its
    whole shard ``[rank::2]`` of the (train + H) permutation, and the two ranks together consume every
    triple of the epoch (before the fix the count came from the train pairs only, so ~share(H) of the
    triples were never seen). Runs the real loop per rank without DDP (no Ray needed); a forward
    pre-hook of the real model records the (user, pos) pairs of every optimizer step."""
    from blast_ray.train.inputs import epoch_triples
    from blast_ray.train.loop import EvalPlan as Plan, Worker, train_loop

    hu, hi = ot_pairs
    inputs = TrainInputs(baby_small, extra_users=hu, extra_items=hi)
    n_total = baby_small.train.nnz + len(hu)
    assert len(hu) > 0.05 * baby_small.train.nnz  # H is a real share of the epoch
    cfg = TrainConfig(model="bpr", epochs=1, batch_size=128, seed=3, eval_every=1)
    seen_all = []
    for rank in range(2):
        model = model_for(cfg, inputs)
        consumed: list[np.ndarray] = []
        model.register_forward_pre_hook(
            lambda m, args: consumed.append(np.stack([args[1].numpy(), args[2].numpy()], axis=1)))
        train_loop(cfg, inputs, Plan(), worker=Worker(rank=rank, world=2), model=model)
        users, pos, _ = epoch_triples(inputs, cfg.seed, 0, rank, 2)
        shard = np.stack([users, pos], axis=1)
        got = np.concatenate(consumed)
        # every batch slice of this shard was a step; all the shard's triples were consumed
        assert len(consumed) == -(-(-(-n_total // 2)) // cfg.batch_size)  # ceil(ceil(n/2)/batch)
        assert len(got) >= len(shard)
        np.testing.assert_array_equal(got[: len(shard)], shard)
        seen_all.append(got[: len(shard)])
    both = np.concatenate(seen_all)
    assert len(both) == n_total  # train + H, each triple once over the two ranks
    keys = both[:, 0] * baby_small.n_items + both[:, 1]
    expected = np.concatenate([baby_small.train_pairs()[0] * baby_small.n_items + baby_small.train_pairs()[1],
                               hu.astype(np.int64) * baby_small.n_items + hi.astype(np.int64)])
    np.testing.assert_array_equal(np.sort(keys), np.sort(expected))


def test_batch_slices_cover_the_largest_shard():
    from blast_ray.train.inputs import batch_slices

    for n_total, world, bs in [(10, 3, 2), (1000, 2, 64), (7, 8, 4), (4096, 4, 1024), (1, 1, 5)]:
        slices = batch_slices(n_total, world, bs)
        for rank in range(world):
            shard = len(range(rank, n_total, world))
            covered = sum(len(range(*s.indices(shard))) for s in slices)
            assert covered == shard, (n_total, world, bs, rank)
