"""The models compute their written formulas (blast_ray/models/blast.py's docstring), values and
gradients, whatever the implementation does to save whole-table temporaries (the layer sum kept in
one buffer, users and items split in one op, the BPR term's gathered rows reused by the
auxiliary terms). Small random graphs: the formulas, not the data, are under test."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blast_ray.models.blast import BLAST
from blast_ray.models.bpr import GraphInputs
from blast_ray.models.graph_backend import get_backend
from blast_ray.models.lightgcn import lightgcn_propagate

N_USERS, N_ITEMS, DIM = 23, 17, 8


def _graph(backend, n: int, density: float, seed: int, symmetric: bool):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n, n)) < density) * rng.random((n, n))
    if symmetric:
        dense = dense + dense.T
    rows, cols = np.nonzero(dense)
    vals = dense[rows, cols].astype(np.float32)
    handle = backend.build(torch.from_numpy(rows), torch.from_numpy(cols), torch.from_numpy(vals), (n, n),
                           symmetric=symmetric)
    return handle, torch.from_numpy(dense.astype(np.float32))


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
def test_lightgcn_propagation_is_the_mean_of_the_layers(n_layers):
    backend = get_backend("torch")
    ui, a = _graph(backend, N_USERS + N_ITEMS, 0.2, 1, symmetric=True)
    g = GraphInputs(backend=backend, ui=ui)
    ego = torch.randn(N_USERS + N_ITEMS, DIM, generator=torch.Generator().manual_seed(2), requires_grad=True)
    ego_ref = ego.detach().clone().requires_grad_(True)
    weights = torch.randn(N_USERS + N_ITEMS, DIM, generator=torch.Generator().manual_seed(3))

    out = lightgcn_propagate(g, ego, n_layers)
    layers, h = [ego_ref], ego_ref
    for _ in range(n_layers):
        h = a @ h
        layers.append(h)
    ref = torch.stack(layers).mean(0)

    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(ego.grad, ego_ref.grad, rtol=1e-5, atol=1e-6)


def test_blast_loss_and_gradients_are_the_documented_formula():
    torch.manual_seed(0)
    backend = get_backend("torch")
    ui, a = _graph(backend, N_USERS + N_ITEMS, 0.2, 4, symmetric=True)
    ii, s_i = _graph(backend, N_ITEMS, 0.3, 5, symmetric=False)
    uu, s_u = _graph(backend, N_USERS, 0.3, 6, symmetric=False)
    x_item, x_user = torch.randn(N_ITEMS, 12), torch.randn(N_USERS, 10)
    g = GraphInputs(backend=backend, ui=ui, ii=ii, uu=uu, features={"item_text": x_item, "user_text": x_user})
    model = BLAST(N_USERS, N_ITEMS, DIM, n_layers_ui=2, n_layers_ii=1, n_layers_uu=2, reg_weight=0.3,
                  user_reg_weight=0.7, feature_dims={"item_text": 12, "user_text": 10})
    users = torch.tensor([0, 3, 3, 7, 22, 11])
    pos, neg = torch.tensor([1, 2, 16, 5, 0, 9]), torch.tensor([4, 4, 8, 15, 3, 2])

    loss = model(g, users, pos, neg)
    loss.backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    def bpr(u, i, j):
        return -F.logsigmoid((u * i).sum(-1) - (u * j).sum(-1)).mean()

    # method section 3: f_i = S_I Z_I + H_UI[i], h_u = S_U^2 Z_U + H_UI[u], H_UI the 2-layer LightGCN mean
    ego = torch.cat([model.user_emb, model.item_emb])
    h = (ego + a @ ego + a @ (a @ ego)) / 3
    h_u = h[:N_USERS] + s_u @ (s_u @ model.user_emb)
    f_i = h[N_USERS:] + s_i @ model.item_emb
    w_item, w_user = model.projections["item_text"], model.projections["user_text"]
    ref = (bpr(h_u[users], f_i[pos], f_i[neg])
           + 0.3 * bpr(h_u[users], w_item(x_item[pos]), w_item(x_item[neg]))
           + 0.7 * bpr(w_user(x_user[users]), f_i[pos], f_i[neg]))
    ref.backward()

    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")
