"""Time one LightGCN training epoch on Amazon Baby with graph backend torch vs dgl (run in .venv-dgl).

    DGLBACKEND=pytorch .venv-dgl/bin/python benchmarks/graph_backend_baby.py
    DGLBACKEND=pytorch .venv-dgl/bin/python benchmarks/graph_backend_baby.py --backends torch dgl --epochs 2

The epoch is the LightGCN reference loop written against the backend interface only (not the
blast_ray.train trainer): per batch of ``--batch-size`` real train (user, item) pairs + one uniform
negative, full-graph propagation H = mean_l A^l E (``--layers``, default 3) on the symmetric-
normalized Baby adjacency, BPR loss, backward, Adam step. Same seed and same batches for every
backend. Baby's train split: 19,445 users, 7,050 items, 119,674 pairs -> 59 batches of 2,048.
Ends with one line ``RESULT {json}`` (seconds per epoch per backend, machine, threads, seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parent.parent


def load_baby_train(folder: Path) -> sp.csr_matrix:
    n_users = len(json.loads((folder / "user2id.json").read_text()))
    n_items = len(json.loads((folder / "item2id.json").read_text()))
    train = json.loads((folder / "train.json").read_text())
    users = np.fromiter((int(u) for u, its in train.items() for _ in its), dtype=np.int64)
    items = np.fromiter((int(i) for its in train.values() for i in its), dtype=np.int64)
    r = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    r.sum_duplicates()
    r.data[:] = 1.0
    return r


def normalized_adjacency(r: sp.csr_matrix) -> sp.coo_matrix:
    a = sp.bmat([[None, r], [r.T, None]], format="csr").astype(np.float64)
    deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    return (sp.diags(inv) @ a @ sp.diags(inv)).tocoo().astype(np.float32)


def one_epoch(backend, adj: sp.coo_matrix, r: sp.csr_matrix, args) -> tuple[float, float, float]:
    """(build seconds, epoch seconds, mean loss) for one LightGCN epoch."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    n_users, n_items = r.shape
    t0 = time.perf_counter()
    handle = backend.build(
        torch.from_numpy(adj.row.astype(np.int64)),
        torch.from_numpy(adj.col.astype(np.int64)),
        torch.from_numpy(adj.data),
        adj.shape,
        torch.device("cpu"),
    )
    build_s = time.perf_counter() - t0
    emb = torch.nn.Parameter(torch.randn(n_users + n_items, args.dim) * 0.1)
    opt = torch.optim.Adam([emb], lr=1e-3)
    coo = r.tocoo()
    order = rng.permutation(coo.nnz)
    losses = []
    t0 = time.perf_counter()
    for n_batch, start in enumerate(range(0, coo.nnz, args.batch_size)):
        if args.max_batches and n_batch >= args.max_batches:
            break
        pick = order[start : start + args.batch_size]
        u = torch.from_numpy(coo.row[pick].astype(np.int64))
        i = torch.from_numpy(coo.col[pick].astype(np.int64))
        j = torch.from_numpy(rng.integers(0, n_items, len(pick)))
        out, layer = emb, emb
        for _ in range(args.layers):
            layer = backend.spmm(handle, layer)
            out = out + layer
        h = out / (args.layers + 1)
        h_u, f_i = h[:n_users], h[n_users:]
        diff = (h_u[u] * f_i[i]).sum(-1) - (h_u[u] * f_i[j]).sum(-1)
        loss = -torch.nn.functional.logsigmoid(diff).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return build_s, time.perf_counter() - t0, float(np.mean(losses))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("BLAST_DATA_DIR", ROOT.parent / "shared" / "data")))
    p.add_argument("--backends", nargs="+", default=["torch", "dgl"])
    p.add_argument("--epochs", type=int, default=1, help="epochs timed per backend (each from the same init)")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--max-batches", type=int, default=0, help="stop the epoch after this many batches (0 = full epoch)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from blast_ray.models.graph_backend import get_backend

    r = load_baby_train(args.data / "amazon-baby-5core")
    adj = normalized_adjacency(r)
    result: dict = {
        "dataset": "amazon-baby-5core",
        "users": r.shape[0],
        "items": r.shape[1],
        "train_pairs": int(r.nnz),
        "batches": min(-(-r.nnz // args.batch_size), args.max_batches or r.nnz),
        "layers": args.layers,
        "dim": args.dim,
        "seed": args.seed,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus {platform.processor() or ''}".strip(),
    }
    for name in args.backends:
        backend = get_backend(name)
        for epoch in range(args.epochs):
            build_s, epoch_s, loss = one_epoch(backend, adj, r, args)
            print(f"{name} epoch {epoch}: build {build_s:.2f}s, epoch {epoch_s:.2f}s, mean BPR loss {loss:.5f}", flush=True)
            result[f"{name}.epoch_s"] = round(min(epoch_s, result.get(f"{name}.epoch_s", float("inf"))), 3)
            result[f"{name}.build_s"] = round(build_s, 3)
            result[f"{name}.loss"] = round(loss, 6)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
