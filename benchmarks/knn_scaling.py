"""User-user kNN graph at Sports scale (35,598 users) within the machine's memory.

User vectors (real, from the real Sports interactions, no content exists for Sports here):
  --vectors svd  : 64-d truncated SVD (scipy svds) of the binary user x item matrix of ALL the
                   user's items except the last two (a leave-two-out "train" view), dense float32;
  --vectors cooc : the sparse binary rows of that matrix themselves (co-occurrence cosine).
Builds the blocked top-k (single process, or Ray tasks with --ray), then D^-1/2 S D^-1/2, and prints
time, peak RSS and one line ``RESULT {json}``. Seeds: svds v0 = ones (deterministic).

  .venv/bin/python benchmarks/knn_scaling.py --vectors svd --block-rows 2048
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from blast_ray.graphs import knn_topk, sym_normalize  # noqa: E402
from blast_ray.graphs.knn import _to_csr  # noqa: E402


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def load_sports(path: Path) -> sp.csr_matrix:
    rows, cols = [], []
    with open(path) as f:
        for u, line in enumerate(f):
            items = [int(t) for t in line.split()[1:]]
            for it in items[:-2]:  # leave the last two (valid/test in ICLRec's protocol) out
                rows.append(u)
                cols.append(it)
    cols = np.asarray(cols)
    _, cols = np.unique(cols, return_inverse=True)
    r = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(max(rows) + 1, cols.max() + 1))
    r.data[:] = 1.0
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/amazon-sports-5core"))
    ap.add_argument("--vectors", choices=["svd", "cooc"], default="svd")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--block-rows", type=int, default=2048)
    ap.add_argument("--ray", action="store_true")
    args = ap.parse_args()
    files = sorted(p for p in Path(args.data).iterdir() if p.suffix == ".txt" and not p.name.startswith("LICENSE"))
    if not files:
        sys.exit(f"no Sports .txt file under {args.data}")
    t0 = time.time()
    r = load_sports(files[0])
    t_load = time.time() - t0
    t0 = time.time()
    if args.vectors == "svd":
        u, s, _ = svds(r.astype(np.float64), k=args.dim, v0=np.ones(min(r.shape)))
        x = (u * s).astype(np.float32)
    else:
        x = r
    t_vec = time.time() - t0
    t0 = time.time()
    if args.ray:
        from blast_ray.graphs import knn_topk_ray

        cols, _ = knn_topk_ray(x, args.k, True, args.block_rows, 0)
    else:
        cols, _ = knn_topk(x, args.k, True, args.block_rows)
    s_u = sym_normalize(_to_csr(cols, r.shape[0]))
    t_knn = time.time() - t0
    res = {
        "users": int(r.shape[0]), "items": int(r.shape[1]), "train_nnz": int(r.nnz), "vectors": args.vectors,
        "dim": int(x.shape[1]), "k": args.k, "block_rows": args.block_rows, "ray": bool(args.ray),
        "graph_nnz": int(s_u.nnz), "load_s": round(t_load, 2), "vectors_s": round(t_vec, 2),
        "knn_s": round(t_knn, 2), "peak_rss_gib": round(peak_rss_gib(), 3),
        "dense_MxM_gib_avoided": round(r.shape[0] ** 2 * 8 / (1 << 30), 2),
        "machine": f"{platform.machine()} {platform.node()} cpus={__import__('os').cpu_count()}", "seed": "svds v0=ones",
    }
    print(f"user-user kNN over {res['users']} users: {t_knn:.1f}s, peak RSS {res['peak_rss_gib']} GiB")
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
