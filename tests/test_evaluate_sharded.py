"""Sharded evaluation (issue 12 item 3) on a real Baby slice with trained representations: users
split into Ray tasks, per-shard metric sums added, gives the unsharded metrics; the scoring block
sized from evaluate.block_memory_gib changes nothing but the block; baselines go through the train
section's path (workers, GPU flag) instead of a hard-coded single CPU process."""

import numpy as np
import pytest
import torch

from blast_ray.config import ConfigError, EvaluateConfig, TrainConfig
from blast_ray.evaluate.sharded import score_split_sharded, shard_users
from blast_ray.evaluate.stage import block_users, run_baseline
from blast_ray.ranking.metrics import users_per_block
from blast_ray.ranking.scoring import score_split


@pytest.fixture(scope="module")
def baby_trained(dataset):
    from blast_ray.etl.readers import read_lattice_split
    from blast_ray.train import EvalPlan, TrainInputs, final_outputs, fit

    data = read_lattice_split(dataset("amazon-baby-5core"), max_users=2500)
    cfg = TrainConfig(model="lightgcn", epochs=2, lr=0.01, seed=3, batch_size=2048, progress=False)
    plan = EvalPlan(ks=(10, 20), batch_users=4096)
    state = fit(cfg, TrainInputs(data), plan)
    _, h_u, f_i, _, _ = final_outputs(cfg, TrainInputs(data), state, plan)
    return data, torch.from_numpy(h_u), torch.from_numpy(f_i)


def test_sharded_metrics_equal_unsharded(baby_trained, ray_local):
    data, h_u, f_i = baby_trained
    ks = (10, 20)
    for split in ("valid", "test"):
        want = score_split(h_u, f_i, data, split, ks, 4096)
        assert want["n_users"] > 1000 and want["recall@20"] > 0
        for shards, per_block in ((1, 333), (3, 4096), (4, 97)):
            got = score_split_sharded(h_u, f_i, data, split, ks, per_block, shards)
            assert got["n_users"] == want["n_users"]
            assert set(got) == set(want)
            for name, v in want.items():
                assert got[name] == pytest.approx(v, rel=1e-12, abs=1e-15), (split, shards, per_block, name)


def test_shards_cover_users_once():
    users = np.array([3, 5, 8, 13, 21, 34, 55])
    parts = shard_users(users, 3)
    assert [len(p) for p in parts] == [3, 2, 2]
    np.testing.assert_array_equal(np.concatenate(parts), users)
    assert len(shard_users(users, 50)) == len(users)  # never an empty shard


def test_block_sized_from_memory_budget():
    ev = EvaluateConfig()
    assert ev.batch_users == 0  # no fixed block: the budget decides
    assert block_users(ev, 376_000) == 713  # Clothing: 1 GiB / (376k items x 4 B)
    assert block_users(ev.updated(block_memory_gib=0.25), 7_050) == 9_518
    assert block_users(ev.updated(batch_users=512), 7_050) == 512  # an explicit count caps it
    assert users_per_block(10**9, 0.001) == 1
    with pytest.raises(ConfigError, match="evaluate.block_memory_gib"):
        EvaluateConfig(block_memory_gib=0).validate()


def test_baselines_train_through_the_train_section(baby_trained, monkeypatch):
    """run_baseline hands fit the train section as configured (num_workers, use_gpu), only the
    model swapped and warm start dropped, plus the checkpoint place; no hard-coded 1 worker / CPU."""
    import blast_ray.train as train_pkg

    data, _, _ = baby_trained
    seen = {}
    real_fit = train_pkg.fit

    def spy(cfg, inputs, plan, **kw):
        seen.update(cfg=cfg, kw=kw)
        return real_fit(cfg.updated(num_workers=1), inputs, plan)  # this machine: train it in one process

    monkeypatch.setattr(train_pkg, "fit", spy)
    cfg = TrainConfig(model="blast", epochs=1, num_workers=3, use_gpu=True, seed=3, warm_start_from="/x", progress=False)
    res = run_baseline("bpr", cfg, data, (20,), 4096, num_shards=1, store="STORE", checkpoint_parts=("baby", "c", "b"))
    assert seen["cfg"].model == "bpr" and seen["cfg"].num_workers == 3 and seen["cfg"].use_gpu is True
    assert seen["cfg"].warm_start_from is None
    assert seen["kw"] == {"store": "STORE", "checkpoint_parts": ("baby", "c", "b"), "source": None}
    assert res["num_workers"] == 3 and res["use_gpu"] is True and res["metrics"]["valid.recall@20"] > 0
