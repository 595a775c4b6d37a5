"""The bounded-steps epoch (issue 12): at most ``train.max_steps_per_epoch`` optimizer steps, the
batch grown with the data, the learning-rate rule for the larger batch, and the DDP all-reduce
bytes per epoch the trainer reports. Rules checked as pure functions, then through the real loop on
a real Baby slice."""

import math

import numpy as np
import pytest
import torch

from blast_ray.config import ConfigError, TrainConfig
from blast_ray.etl.readers import read_lattice_split
from blast_ray.train import TrainInputs
from blast_ray.train.inputs import (allreduce_bytes_per_epoch, epoch_triples, model_for, n_positives, parameter_bytes,
                                    step_plan, step_plan_for)

N_USERS = 1500


@pytest.fixture(scope="module")
def baby(dataset):
    return read_lattice_split(dataset("amazon-baby-5core"))


@pytest.fixture(scope="module")
def baby_small(dataset):
    torch.set_num_threads(1)
    return read_lattice_split(dataset("amazon-baby-5core"), max_users=N_USERS)


@pytest.mark.parametrize("n_total,world,batch,cap", [
    (119_674, 1, 2048, 50), (119_674, 2, 2048, 50), (80_000, 1, 2048, 50), (8_700_000, 8, 2048, 50),
    (10_000_000, 1, 2048, 50), (7, 8, 4, 1), (1, 1, 5, 3), (4096, 4, 1024, 1), (123_457, 3, 100, 7)])
def test_step_plan_caps_steps_and_covers_every_shard(n_total, world, batch, cap):
    p = step_plan(n_total, world, batch, cap)
    per_worker = -(-n_total // world)
    assert 1 <= p.steps <= cap and p.batch_size >= batch
    assert p.steps * p.batch_size >= per_worker > (p.steps - 1) * p.batch_size  # no empty trailing step
    slices = p.slices()
    assert len(slices) == p.steps
    for rank in range(world):  # every rank consumes its whole shard [rank::world], train + H
        shard = len(range(rank, n_total, world))
        assert sum(len(range(*s.indices(shard))) for s in slices) == shard
    if -(-per_worker // batch) <= cap:  # the cap does not bind: today's rule, unchanged
        assert p.batch_size == batch and p.lr_scale == 1.0 and p.steps == -(-per_worker // batch)


def test_lr_rules_and_their_cap():
    p = step_plan(100_000, 1, 1000, 10, "sqrt", 4.0)  # batch 10,000 = 10x
    assert p.batch_size == 10_000 and p.lr_scale == pytest.approx(math.sqrt(10))
    assert step_plan(100_000, 1, 1000, 10, "linear", 8.0).lr_scale == pytest.approx(8.0)  # 10x capped at 8
    assert step_plan(100_000, 1, 1000, 10, "linear", 20.0).lr_scale == pytest.approx(10.0)
    assert step_plan(100_000, 1, 1000, 10, "none", 4.0).lr_scale == 1.0
    assert step_plan(100_000, 1, 1000, 100, "linear", 8.0).lr_scale == 1.0  # batch not grown
    assert step_plan(10**8, 1, 1000, 10, "sqrt", 4.0).lr_scale == 4.0  # 10,000x: capped
    with pytest.raises(ValueError, match="max_steps_per_epoch"):
        step_plan(100, 1, 10, 0)
    with pytest.raises(ValueError, match="lr_batch_scaling"):
        step_plan(100, 1, 10, 5, "cubic")


def test_config_validates_the_step_settings():
    with pytest.raises(ConfigError, match=r"train\.max_steps_per_epoch"):
        TrainConfig(max_steps_per_epoch=0)
    with pytest.raises(ConfigError, match=r"train\.lr_batch_scaling"):
        TrainConfig(lr_batch_scaling="cubic")
    with pytest.raises(ConfigError, match=r"train\.max_lr_scale"):
        TrainConfig(max_lr_scale=0.5)


def test_a_batch_that_cannot_fit_fails_before_training(baby):
    """One line naming the settings and the batch computed, raised by fit before any epoch."""
    from blast_ray.train import fit

    cfg = TrainConfig(model="lightgcn", max_steps_per_epoch=1, max_batch_size=100_000, epochs=1)
    with pytest.raises(ValueError, match=r"train\.max_steps_per_epoch=1 gives batches of 119,674 triples per worker .*"
                                         r"train\.max_batch_size=100,000: set train\.max_steps_per_epoch >= 2") as e:
        fit(cfg, TrainInputs(baby))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"train\.max_batch_size"):
        TrainConfig(batch_size=4096, max_batch_size=2048)


def test_baby_default_plan_is_nearly_todays(baby):
    """Real Baby, one worker: 119,674 positives, today 59 steps of 2,048; the default cap of 50
    grows the batch by 17% (lr x 1.17, linear rule); with two workers (30 steps) nothing changes."""
    cfg = TrainConfig(model="lightgcn")
    p = step_plan_for(cfg, TrainInputs(baby), 1)
    assert n_positives(TrainInputs(baby)) == 119_674
    assert (p.steps, p.batch_size) == (50, 2394) and p.lr_scale == pytest.approx(2394 / 2048)
    p2 = step_plan_for(cfg, TrainInputs(baby), 2)
    assert (p2.steps, p2.batch_size, p2.lr_scale) == (30, 2048, 1.0)


def test_allreduce_figure_is_parameter_bytes_times_steps(baby):
    cfg = TrainConfig(model="lightgcn", embedding_dim=64)
    model = model_for(cfg, TrainInputs(baby))
    pbytes = parameter_bytes(model)
    assert pbytes == (baby.n_users + baby.n_items) * 64 * 4  # the two embedding tables, float32
    assert allreduce_bytes_per_epoch(pbytes, 30, 2) == pbytes * 30
    assert allreduce_bytes_per_epoch(pbytes, 50, 1) == 0  # one worker: no all-reduce
    # Clothing 2018 5-core (1.58M nodes x 64 x 4 B), 8 workers, ~8.7M positives: old 531 steps, new 50
    clothing = 1_580_000 * 64 * 4
    old = allreduce_bytes_per_epoch(clothing, step_plan(8_700_000, 8, 2048, 10**12).steps, 8)
    new = allreduce_bytes_per_epoch(clothing, step_plan(8_700_000, 8, 2048, 50).steps, 8)
    assert old / new >= 10


def test_loop_runs_the_capped_plan_and_reports_it(baby_small):
    """The real loop, a forced cap of 4 steps on rank 0 of 2: exactly 4 optimizer steps of the
    grown batch, consuming the rank's whole shard once; the Adam lr is lr x growth (linear); the
    history row reports steps, batch, lr and all-reduce bytes = parameter bytes x steps."""
    from blast_ray.train.loop import EvalPlan, Worker, train_loop

    inputs = TrainInputs(baby_small)
    cfg = TrainConfig(model="lightgcn", epochs=1, seed=5, batch_size=256, max_steps_per_epoch=4, lr=1e-3)
    model = model_for(cfg, inputs)
    consumed = []
    model.register_forward_pre_hook(lambda m, args: consumed.append(args[1].numpy().copy()))
    state = train_loop(cfg, inputs, EvalPlan(), worker=Worker(rank=0, world=2), model=model)
    n = n_positives(inputs)
    per_worker = -(-n // 2)
    batch = -(-per_worker // 4)
    assert batch > cfg.batch_size  # the cap binds: the batch grew
    train_calls = consumed[:4]  # the forward hook also sees nothing else: validation uses representations()
    assert len(consumed) == 4 and [len(c) for c in train_calls[:3]] == [batch] * 3
    users, _, _ = epoch_triples(inputs, cfg.seed, 0, 0, 2)
    np.testing.assert_array_equal(np.concatenate(train_calls), users)
    row = state.history[0]
    assert row["steps"] == 4 and row["batch_size"] == batch
    assert batch / 256 < cfg.max_lr_scale and row["lr"] == pytest.approx(1e-3 * batch / 256)
    assert state.optimizer["param_groups"][0]["lr"] == pytest.approx(row["lr"])
    assert row["allreduce_bytes"] == parameter_bytes(model) * 4
    one = train_loop(cfg, inputs, EvalPlan(), model=model_for(cfg, inputs))
    assert one.history[0]["allreduce_bytes"] == 0 and one.history[0]["steps"] == 4


def _side_inputs(data, seed=5):
    """Baby slice + kNN-like S_I / S_U (random 10 neighbours, row-normalized) and 16-d features."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    inputs = TrainInputs(data)
    for kind, n in (("item", data.n_items), ("user", data.n_users)):
        cols = (np.arange(n)[:, None] + rng.integers(1, n, size=(n, 10))) % n
        m = sp.csr_matrix((np.full(n * 10, 0.1, dtype=np.float32), (np.repeat(np.arange(n), 10), cols.ravel())), (n, n))
        setattr(inputs, f"{kind}_graph", m)
    inputs.features = {"item_text": rng.standard_normal((data.n_items, 16), dtype=np.float32),
                       "user_text": rng.standard_normal((data.n_users, 16), dtype=np.float32)}
    return inputs


def test_symmetric_adjacency_has_no_transposed_copy_and_the_same_gradients(baby_small):
    """The torch backend's CSR of the (symmetric) user-item A: int32 indices, A^T not copied
    (``symmetric=True``), and forward and x-gradient equal to a general build (which holds A^T) and
    to scipy's product on the real Baby slice."""
    from blast_ray.models.adjacency import normalized_adjacency
    from blast_ray.models.graph_backend import get_backend

    b = get_backend("torch")
    d = baby_small
    u, i = d.train_pairs()
    n = d.n_users + d.n_items
    coo = normalized_adjacency(u, i, d.n_users, d.n_items)
    sym, gen = b.build(*coo, (n, n), "cpu", symmetric=True), b.build(*coo, (n, n), "cpu")
    assert sym.transposed is sym.matrix and gen.transposed is not gen.matrix
    assert sym.matrix.crow_indices().dtype == torch.int32 and sym.nnz == 2 * d.train.nnz
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    grads = []
    for h in (sym, gen):
        xr = x.clone().requires_grad_(True)
        y = b.spmm(h, xr)
        (y * torch.arange(8.0)).sum().backward()
        grads.append((y.detach(), xr.grad))
    import scipy.sparse as sp
    ref = sp.coo_matrix((coo[2].numpy(), (coo[0].numpy(), coo[1].numpy())), shape=(n, n)).tocsr()
    assert torch.allclose(grads[0][0], torch.from_numpy(ref @ x.numpy()), atol=1e-5)
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6) and torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


def test_per_run_graphs_are_built_once_and_shared_by_the_epochs(baby_small):
    """graph_inputs(..., reuse=full): LightGCN's epoch graph IS the full graph (never rebuilt);
    BLAST's epoch graph shares S_I, S_U and the features and only rebuilds the pruned A, which equals
    the one built without reuse."""
    from blast_ray.models.graph_backend import get_backend
    from blast_ray.train.inputs import graph_inputs

    b = get_backend("torch")
    inputs = _side_inputs(baby_small)
    lcfg = TrainConfig(model="lightgcn", seed=3)
    full = graph_inputs(lcfg, inputs, b, "cpu", epoch=None)
    assert graph_inputs(lcfg, inputs, b, "cpu", epoch=4, reuse=full) is full
    bcfg = TrainConfig(model="blast", seed=3)
    full = graph_inputs(bcfg, inputs, b, "cpu", epoch=None)
    g = graph_inputs(bcfg, inputs, b, "cpu", epoch=4, reuse=full)
    fresh = graph_inputs(bcfg, inputs, b, "cpu", epoch=4)
    assert g.ii is full.ii and g.uu is full.uu and g.features is full.features and g.ui is not full.ui
    assert g.ui.nnz < full.ui.nnz
    for a, c in ((g.ui.matrix, fresh.ui.matrix), (g.ii.matrix, fresh.ii.matrix)):
        assert torch.equal(a.crow_indices(), c.crow_indices()) and torch.equal(a.col_indices(), c.col_indices())
        assert torch.equal(a.values(), c.values())


def test_trainer_adam_is_fused_here_and_updates_like_the_default(baby_small):
    """loop.adam: fused on this torch (CPU fused Adam exists from torch 2.4), the same weights as
    the default (foreach) Adam after 3 BLAST steps on the real slice."""
    from blast_ray.models.graph_backend import get_backend
    from blast_ray.train.inputs import graph_inputs
    from blast_ray.train.loop import adam

    inputs = _side_inputs(baby_small)
    cfg = TrainConfig(model="blast", seed=3)
    g = graph_inputs(cfg, inputs, get_backend("torch"), "cpu", epoch=0)
    users, pos, neg = (torch.from_numpy(a[:1024]) for a in epoch_triples(inputs, 3, 0, 0, 1))
    weights = []
    for make in (lambda p: adam(p, 1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)):
        torch.manual_seed(3)
        model = model_for(cfg, inputs)
        opt = make(model.parameters())
        for _ in range(3):
            loss = model(g, users, pos, neg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        weights.append((opt.param_groups[0].get("fused"), model.state_dict()))
    assert weights[0][0] is True and not weights[1][0]
    for k, v in weights[0][1].items():
        assert torch.allclose(v, weights[1][1][k], rtol=1e-5, atol=1e-6), k


def test_optimizer_state_saved_fused_resumes_into_a_default_adam_and_back():
    """loop.load_optimizer_state: a checkpoint written by fused Adam (torch >= 2.4) loads into the
    default Adam (the DGL venv's torch 2.2 has no CPU fused kernel) keeping the loader's flags, and
    the next step equals the uninterrupted fused run's."""
    from blast_ray.train.loop import adam, load_optimizer_state

    torch.manual_seed(0)
    w0 = torch.randn(50, 8)
    grads = [torch.randn(50, 8) for _ in range(3)]

    def run(opt_factory, steps, p, opt=None):
        opt = opt or opt_factory([p])
        for g in steps:
            p.grad = g.clone()
            opt.step()
        return opt

    p_ref = torch.nn.Parameter(w0.clone())
    run(lambda ps: adam(ps, 1e-2), grads, p_ref)
    p = torch.nn.Parameter(w0.clone())
    saved = run(lambda ps: adam(ps, 1e-2), grads[:2], p).state_dict()
    assert saved["param_groups"][0]["fused"] is True
    plain = torch.optim.Adam([p], lr=1e-2)
    load_optimizer_state(plain, saved)
    assert not plain.param_groups[0]["fused"]
    run(None, grads[2:], p, opt=plain)
    assert torch.allclose(p, p_ref, rtol=1e-5, atol=1e-6)


def test_blast_with_every_part_off_is_lightgcn(baby_small):
    """n_layers_ii = n_layers_uu = 0, prune_ratio = 0, no auxiliary terms: the same scores and loss as
    LightGCN from the same weights (the tuning space's fallback really is the simpler model; before,
    a 0-layer branch added the ID embedding once more)."""
    from blast_ray.models.graph_backend import get_backend
    from blast_ray.train.inputs import graph_inputs

    inputs = _side_inputs(baby_small)
    users, pos, neg = (torch.from_numpy(a[:512]) for a in epoch_triples(inputs, 3, 0, 0, 1))
    out = {}
    for model in ("blast", "lightgcn"):
        cfg = TrainConfig(model=model, seed=3, n_layers_ui=3, n_layers_ii=0, n_layers_uu=0, prune_ratio=0.0,
                          reg_weight=0.0, user_reg_weight=0.0)
        g = graph_inputs(cfg, inputs, get_backend("torch"), "cpu", epoch=0)
        torch.manual_seed(3)
        m = model_for(cfg, inputs)
        if model == "blast":
            assert g.ii is not None and g.uu is not None  # the graphs are there; the 0-layer branches are off
        with torch.no_grad():
            m.user_emb.copy_(out["user_emb"]) if "user_emb" in out else out.setdefault("user_emb", m.user_emb.clone())
            m.item_emb.copy_(out["item_emb"]) if "item_emb" in out else out.setdefault("item_emb", m.item_emb.clone())
            h_u, f_i = m.representations(g)
            out[model] = (h_u, f_i, float(m(g, users, pos, neg)))
    for a, b in zip(out["blast"][:2], out["lightgcn"][:2]):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
    assert out["blast"][2] == pytest.approx(out["lightgcn"][2], rel=1e-6)
