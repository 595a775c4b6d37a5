"""Recommend at scale (issue 12 item 4) on a real Baby slice: the actors' scoring path (embeddings
memory-mapped from the train output through :func:`blast_ray.train.artifacts.mmap_embeddings`, item
column blocks with a running top-K merge, seen items masked) gives the same recommendations as
scoring the whole users x items matrix at once with the same mask, whatever the block size.
"""

import numpy as np
import torch

from blast_ray.ranking.metrics import topk_items
from blast_ray.ranking.scoring import known_items
from blast_ray.recommend.stage import recommend_block
from blast_ray.store import ArtifactStore, StageOutput
from blast_ray.train import artifacts as train_artifacts


def _trained_embeddings(data):
    """Real representations: BPR-MF trained 3 epochs on the slice."""
    from blast_ray.config import TrainConfig
    from blast_ray.train import EvalPlan, TrainInputs, final_outputs, fit

    cfg = TrainConfig(model="bpr", epochs=3, lr=0.01, seed=5, batch_size=1024, progress=False)
    inputs = TrainInputs(data)
    plan = EvalPlan(ks=(20,), batch_users=512)
    state = fit(cfg, inputs, plan)
    _, h_u, f_i, _, _ = final_outputs(cfg, inputs, state, plan)
    return h_u, f_i


def test_blocked_memmapped_recommendations_equal_full_scoring(dataset, tmp_path):
    from blast_ray.etl.readers import read_lattice_split

    data = read_lattice_split(dataset("amazon-baby-5core"), max_users=1200)
    h_u, f_i = _trained_embeddings(data)
    store = ArtifactStore(str(tmp_path / "store"))
    out = StageOutput.open(store, "baby", "train", {"t": 1}).begin()
    train_artifacts.write_embeddings(out, h_u, f_i)
    users_mm, items_mm = train_artifacts.mmap_embeddings(out)
    assert isinstance(users_mm, np.memmap) and isinstance(items_mm, np.memmap)  # mapped, not loaded
    assert not users_mm.flags.writeable
    np.testing.assert_array_equal(np.asarray(items_mm), f_i)

    seen = known_items(data, "all")
    k = 20
    users = np.arange(300, 700, dtype=np.int64)  # one actor's shard of users, not starting at 0
    want_s, want_i = topk_items(torch.from_numpy(h_u), torch.from_numpy(f_i), users, seen, k)
    want_s, want_i = want_s.numpy(), want_i.numpy()
    n_items = data.n_items
    for max_cells in (len(users) * 97, len(users) * 2000, len(users) * n_items * 2):  # 73 / 4 / 1 item blocks
        got_s, got_i = recommend_block(users, users_mm, items_mm, seen, k, max_cells)
        assert got_i.shape == (len(users), k) and got_s.dtype == np.float32
        np.testing.assert_allclose(got_s, want_s, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(got_i, want_i)  # the same items in the same order
        # never a seen item, no item twice per user
        for r, u in enumerate(users):
            assert not set(got_i[r]) & set(seen[u].indices), u
            assert len(set(got_i[r])) == k
