"""Parity of the two graph backends (torch.sparse CSR vs DGL message passing) on real Baby data.

Runs ONLY in the DGL environment (``make dgl-env``; ``make test`` runs it there with
``.venv-dgl/bin/python -m pytest -m dgl tests/test_graph_backend_parity.py``). The default
``make test`` run deselects the ``dgl`` marker. Inside .venv-dgl nothing here skips: if DGL does
not import, the tests FAIL.

What is compared (method doc sections 2-3), for backend torch vs dgl (both DGL modes):
- LightGCN propagation on the symmetric-normalized user-item adjacency of Baby's train split:
  H_UI = mean_l A^l [Z_U; Z_I], then BPR scores of real train triples, and d(loss)/dZ.
- BLAST-style item-item propagation: H_I = S_I^L Z_I on an item kNN graph (top-10 cosine of the
  items' train co-occurrence, binarized, D^-1/2 S D^-1/2), fused with H_UI; scores and gradients.
- The rectangular case (users x items R @ Z_I and R^T @ Z_U).
Tolerance: 1e-5 (absolute and relative) on every forward output and gradient.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import scipy.sparse as sp

torch = pytest.importorskip("torch")  # torch is in every project venv; never skips in practice

pytestmark = pytest.mark.dgl

TOL = dict(atol=1e-5, rtol=1e-5)
DIM = 64
SEED = 20240611


# --------------------------------------------------------------------------------------------
# Real data: Amazon Baby 5-core (LATTICE split), read straight from its json files.


@pytest.fixture(scope="module")
def baby_train(dataset) -> sp.csr_matrix:
    """Baby's train interactions as a binary users x items CSR (19,445 x 7,050, 119,674 nnz)."""
    folder = dataset("amazon-baby-5core")
    n_users = len(json.loads((folder / "user2id.json").read_text()))
    n_items = len(json.loads((folder / "item2id.json").read_text()))
    train = json.loads((folder / "train.json").read_text())
    users = np.fromiter((int(u) for u, items in train.items() for _ in items), dtype=np.int64)
    items = np.fromiter((int(i) for its in train.values() for i in its), dtype=np.int64)
    r = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    r.sum_duplicates()
    r.data[:] = 1.0
    assert r.shape == (19445, 7050) and r.nnz == 119674, (r.shape, r.nnz)
    return r


def sym_normalize(a: sp.spmatrix) -> sp.csr_matrix:
    """D^-1/2 A D^-1/2 with zero-degree rows left at zero."""
    a = sp.csr_matrix(a, dtype=np.float64)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    d = sp.diags(inv)
    return (d @ a @ d).tocsr().astype(np.float32)


@pytest.fixture(scope="module")
def ui_adjacency(baby_train) -> sp.csr_matrix:
    """Symmetric-normalized A = [[0, R], [R^T, 0]] (26,495 nodes)."""
    r = baby_train
    a = sp.bmat([[None, r], [r.T, None]], format="csr")
    return sym_normalize(a)


@pytest.fixture(scope="module")
def item_knn(baby_train) -> sp.csr_matrix:
    """Normalized item-item kNN graph S_I: top-10 cosine (self included) of the item columns of R.

    Baby has no item features here (see the data README), so the items' train co-occurrence
    profiles stand in for a modality; the graph has the method's shape and normalization.
    """
    k = 10
    r = baby_train.tocsc().astype(np.float64)
    norms = np.sqrt(np.asarray(r.multiply(r).sum(axis=0)).ravel())
    norms[norms == 0] = 1.0
    x = (r @ sp.diags(1.0 / norms)).tocsc()
    sim = (x.T @ x).tocsr()  # sparse: only co-occurring items
    n = sim.shape[0]
    rows, cols = [], []
    for i in range(n):
        start, end = sim.indptr[i], sim.indptr[i + 1]
        idx, val = sim.indices[start:end], sim.data[start:end]
        top = idx[np.argsort(-val, kind="stable")[:k]]
        rows.append(np.full(len(top), i))
        cols.append(top)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    s = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return sym_normalize(s)


@pytest.fixture(scope="module")
def triples(baby_train) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4,096 real train (user, positive item) pairs + a uniformly drawn item as negative."""
    rng = np.random.default_rng(SEED)
    coo = baby_train.tocoo()
    pick = rng.choice(coo.nnz, size=4096, replace=False)
    return coo.row[pick].astype(np.int64), coo.col[pick].astype(np.int64), rng.integers(0, baby_train.shape[1], 4096)


# --------------------------------------------------------------------------------------------
# Backends and the two propagations, written only against the backend interface.


def backends():
    from blast_ray.models.graph_backend import get_backend
    from blast_ray.models.graph_backend.dgl_backend import DGLBackend

    return {"torch": get_backend("torch"), "dgl": get_backend("dgl"), "dgl-update_all": DGLBackend(mode="update_all")}


def build(backend, m: sp.spmatrix):
    coo = sp.coo_matrix(m)
    return backend.build(
        torch.from_numpy(coo.row.astype(np.int64)),
        torch.from_numpy(coo.col.astype(np.int64)),
        torch.from_numpy(coo.data.astype(np.float32)),
        coo.shape,
        torch.device("cpu"),
    )


def lightgcn(backend, handle, emb: torch.Tensor, n_layers: int) -> torch.Tensor:
    """mean over l = 0..L of A^l E."""
    out, layer = emb, emb
    for _ in range(n_layers):
        layer = backend.spmm(handle, layer)
        out = out + layer
    return out / (n_layers + 1)


def embeddings(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, DIM, generator=g) * 0.1).requires_grad_(True)


def bpr(h_u, f_i, u, i, j):
    pos = (h_u[u] * f_i[i]).sum(-1)
    neg = (h_u[u] * f_i[j]).sum(-1)
    return pos, neg, -torch.nn.functional.logsigmoid(pos - neg).mean()


def run_lightgcn(backend, adj, trip, n_users):
    emb = embeddings(adj.shape[0], SEED)
    h = lightgcn(backend, build(backend, adj), emb, n_layers=3)
    u, i, j = (torch.from_numpy(a) for a in trip)
    pos, neg, loss = bpr(h[:n_users], h[n_users:], u, i, j)
    loss.backward()
    return {"H": h.detach(), "pos": pos.detach(), "neg": neg.detach(), "loss": loss.detach(), "grad": emb.grad}


def run_blast(backend, adj, knn, trip, n_users):
    """f_i = S_I^L Z_I + H_UI[i], h_u = H_UI[u] (the method's item-item + LightGCN fusion)."""
    emb = embeddings(adj.shape[0], SEED + 1)
    h_ui = lightgcn(backend, build(backend, adj), emb, n_layers=2)
    z_i = emb[n_users:]
    h_i, s_i = z_i, build(backend, knn)
    for _ in range(2):
        h_i = backend.spmm(s_i, h_i)
    f_i = h_i + h_ui[n_users:]
    h_u = h_ui[:n_users]
    u, i, j = (torch.from_numpy(a) for a in trip)
    pos, neg, loss = bpr(h_u, f_i, u, i, j)
    loss.backward()
    return {"f_i": f_i.detach(), "h_u": h_u.detach(), "pos": pos.detach(), "loss": loss.detach(), "grad": emb.grad}


def assert_same(ref: dict, other: dict, label: str):
    for key, want in ref.items():
        got = other[key]
        assert got.shape == want.shape, (label, key)
        err = (got - want).abs().max().item()
        assert torch.allclose(got, want, **TOL), f"{label}: {key} differs by up to {err:.3g} (tolerance 1e-5)"


# --------------------------------------------------------------------------------------------


def test_dgl_imports_and_auto_picks_it():
    """In .venv-dgl DGL must import (a failure here means the env is broken: FAIL, not skip)."""
    import dgl

    from blast_ray.models.graph_backend import get_backend
    from blast_ray.models.graph_backend.dgl_backend import dgl_available

    assert dgl.__version__.startswith("2.1"), dgl.__version__
    assert dgl_available()
    assert get_backend("auto").name == "dgl"
    assert get_backend("dgl").name == "dgl" and get_backend("torch").name == "torch"


def test_lightgcn_parity_on_baby(ui_adjacency, triples, baby_train):
    bk = backends()
    results = {}
    for name, b in bk.items():
        t0 = time.perf_counter()
        results[name] = run_lightgcn(b, ui_adjacency, triples, baby_train.shape[0])
        print(f"lightgcn {name}: {time.perf_counter() - t0:.3f}s")
    ref = results["torch"]
    assert ref["grad"] is not None and ref["grad"].abs().sum() > 0
    assert ref["H"].abs().max() > 0
    for name in ("dgl", "dgl-update_all"):
        assert_same(ref, results[name], f"lightgcn torch vs {name}")


def test_blast_item_graph_parity_on_baby(ui_adjacency, item_knn, triples, baby_train):
    assert item_knn.shape == (7050, 7050)
    # k = 10 with self included: every item with any co-occurrence keeps at most 10 neighbours
    assert np.diff(item_knn.indptr).max() == 10
    bk = backends()
    results = {name: run_blast(b, ui_adjacency, item_knn, triples, baby_train.shape[0]) for name, b in bk.items()}
    ref = results["torch"]
    # gradients reach the item embeddings through S_I as well as through A
    assert ref["grad"][baby_train.shape[0]:].abs().sum() > 0
    for name in ("dgl", "dgl-update_all"):
        assert_same(ref, results[name], f"blast torch vs {name}")


def test_rectangular_parity(baby_train):
    """Non-square A (users x items R and its transpose) maps to DGL's bipartite graph."""
    r = sym_normalize(sp.bmat([[None, baby_train], [baby_train.T, None]]))[: baby_train.shape[0], baby_train.shape[0]:]
    bk = backends()
    for m in (r, r.T):
        x_ref = embeddings(m.shape[1], SEED + 2)
        ref_b = bk["torch"]
        y_ref = ref_b.spmm(build(ref_b, m), x_ref)
        y_ref.pow(2).sum().backward()
        for name in ("dgl", "dgl-update_all"):
            b = bk[name]
            x = x_ref.detach().clone().requires_grad_(True)
            y = b.spmm(build(b, m), x)
            y.pow(2).sum().backward()
            assert y.shape == (m.shape[0], DIM)
            assert_same({"y": y_ref.detach(), "grad": x_ref.grad}, {"y": y.detach(), "grad": x.grad}, name)
    # against scipy too, so parity cannot hold by both backends being wrong the same way
    x = embeddings(r.shape[1], SEED + 3).detach()
    want = torch.from_numpy(np.asarray(r @ x.numpy(), dtype=np.float32))
    assert torch.allclose(bk["dgl"].spmm(build(bk["dgl"], r), x), want, **TOL)


def test_dgl_backend_rejects_bad_input():
    from blast_ray.models.graph_backend.dgl_backend import DGLBackend

    b = DGLBackend()
    rows, cols, vals = torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="differ in length"):
        b.build(rows, cols[:1], vals, (2, 2), "cpu")
    with pytest.raises(ValueError, match="row index is outside"):
        b.build(torch.tensor([0, 5]), cols, vals, (2, 2), "cpu")
    with pytest.raises(ValueError, match="column index is outside"):
        b.build(rows, torch.tensor([0, -1]), vals, (2, 2), "cpu")
    h = b.build(rows, cols, vals, (2, 3), "cpu")
    with pytest.raises(ValueError, match=r"x must have shape \(3, d\)"):
        b.spmm(h, torch.ones(2, 4))
    with pytest.raises(ValueError, match="mode"):
        DGLBackend(mode="fast")
    # empty rows give zeros, 1-D x works
    assert b.spmm(h, torch.tensor([1.0, 2.0, 3.0])).tolist() == [2.0, 2.0]


def test_project_models_parity_on_baby(ui_adjacency, item_knn, triples, baby_train):
    """The project's own LightGCN and BLAST modules (blast_ray.models): loss and parameter gradients
    with GraphInputs built on torch vs dgl, same initial weights."""
    from blast_ray.models import BLAST, GraphInputs, LightGCN

    n_users, n_items = baby_train.shape
    u, i, j = (torch.from_numpy(a) for a in triples)
    for cls, kw in ((LightGCN, {"n_layers_ui": 3}), (BLAST, {"n_layers_ui": 2, "n_layers_ii": 2})):
        results = {}
        for name, b in backends().items():
            torch.manual_seed(SEED)
            model = cls(n_users, n_items, embedding_dim=DIM, **kw)
            g = GraphInputs(backend=b, ui=build(b, ui_adjacency), ii=build(b, item_knn) if cls is BLAST else None)
            loss = model(g, u, i, j)
            loss.backward()
            h_u, f_i = model.representations(g)
            results[name] = {
                "loss": loss.detach(),
                "h_u": h_u.detach(),
                "f_i": f_i.detach(),
                **{f"grad.{k}": p.grad for k, p in model.named_parameters()},
            }
        ref = results["torch"]
        assert ref["grad.item_emb"].abs().sum() > 0
        for name in ("dgl", "dgl-update_all"):
            assert_same(ref, results[name], f"{cls.__name__} torch vs {name}")


def test_fit_with_dgl_backend_matches_torch_on_baby(dataset):
    """The real training entry point (blast_ray.train.fit, then final_outputs) with
    train.graph_backend: dgl vs torch, same seed, on a real Baby slice (issue 12 item 6): LightGCN
    ID-only and BLAST with the side inputs it trains with (a 16-d SVD item modality of R, user
    profiles R @ x, item and user kNN graphs S_I / S_U, edge pruning): validation (and test)
    metrics equal within 1e-4, every epoch's loss within 1e-5."""
    import sys

    from scipy.sparse.linalg import svds

    from blast_ray.config import TrainConfig
    from blast_ray.etl.readers import read_lattice_split
    from blast_ray.graphs.knn import knn_graph
    from blast_ray.graphs.knn import sym_normalize as knn_normalize
    from blast_ray.train import EvalPlan, TrainInputs, final_outputs, fit

    torch.set_num_threads(1)
    data = read_lattice_split(dataset("amazon-baby-5core"), max_users=2000)
    r = data.train.tocsr()
    u, s, _ = svds(r.T.astype(np.float64).tocsr(), k=16)
    item_x = (u * s).astype(np.float32)
    user_x = np.asarray(r @ item_x, dtype=np.float32)
    side = {"features": {"item_text": item_x, "user_text": user_x},
            "item_graph": knn_normalize(knn_graph(item_x, 10)).astype(np.float32),
            "user_graph": knn_normalize(knn_graph(user_x, 10)).astype(np.float32)}
    plan = EvalPlan(ks=(10, 20), batch_users=4096)
    for model in ("lightgcn", "blast"):
        got = {}
        for backend in ("torch", "dgl"):
            inputs = TrainInputs(data)
            if model == "blast":
                inputs.features, inputs.item_graph, inputs.user_graph = side["features"], side["item_graph"], side["user_graph"]
            cfg = TrainConfig(model=model, epochs=2, lr=0.01, seed=7, batch_size=2048, graph_backend=backend, progress=False)
            state = fit(cfg, inputs, plan)
            _, _, _, valid, test = final_outputs(cfg, inputs, state, plan)
            got[backend] = {"valid": valid, "test": test, "loss": [row["loss"] for row in state.history]}
        assert "dgl" in sys.modules  # the dgl run really went through DGL
        ref, dgl_run = got["torch"], got["dgl"]
        assert ref["valid"]["recall@20"] > 0 and len(ref["loss"]) == 2
        np.testing.assert_allclose(dgl_run["loss"], ref["loss"], rtol=1e-5, atol=0)
        for split in ("valid", "test"):
            for key, v in ref[split].items():
                assert abs(dgl_run[split][key] - v) <= 1e-4, (model, split, key, v, dgl_run[split][key])
