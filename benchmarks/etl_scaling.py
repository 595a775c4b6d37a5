"""ETL scaling benchmark: Amazon-2018-format reviews at growing sizes, timed end to end.

    .venv/bin/python benchmarks/etl_scaling.py                       # 0.2M, 1M, 5M lines
    .venv/bin/python benchmarks/etl_scaling.py --sizes 20000,100000  # quick check

Synthetic lines follow the published 2018 review schema (reviewerID, asin, overall,
unixReviewTime, reviewText, summary); users/items are drawn with a power law so k-core has work.
Prints rows/s per size and the time ratio per size step (linear scaling: ratio ~ size ratio),
then one line ``RESULT {json}``. Seeded (--seed); machine described in the RESULT.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np


def generate(path: str, n: int, rng: np.random.Generator) -> None:
    n_users, n_items = max(10, n // 8), max(10, n // 20)
    users = np.minimum((rng.pareto(1.2, n) * n_users / 50).astype(np.int64), n_users - 1)
    items = np.minimum((rng.pareto(1.1, n) * n_items / 50).astype(np.int64), n_items - 1)
    ratings = rng.integers(1, 6, n)
    ts = 1_300_000_000 + rng.integers(0, 200_000_000, n)
    with open(path, "w") as f:
        for u, i, r, t in zip(users, items, ratings, ts):
            f.write(json.dumps({"overall": float(r), "reviewerID": f"A{u:012d}", "asin": f"B{i:09d}",
                                "unixReviewTime": int(t), "reviewText": "synthetic review text", "summary": "ok"}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="200000,1000000,5000000")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--shuffle-partitions", type=int, default=16)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from blast_ray.config import DatasetConfig, EtlConfig
    from blast_ray.etl import run_etl
    from blast_ray.etl.sparkio import get_spark

    spark = get_spark(args.master, "4g", args.shuffle_partitions)
    rng = np.random.default_rng(args.seed)
    work = tempfile.mkdtemp(prefix="blast-etl-bench-")
    result = {"machine": f"{platform.node()} {os.cpu_count()} cpus", "master": args.master, "seed": args.seed}
    prev = None
    try:
        for n in sizes:
            src = os.path.join(work, f"reviews_{n}.json")
            generate(src, n, rng)
            ds = DatasetConfig(f"bench{n}", "amazon2018", {"reviews": src})
            t = time.time()
            rc = run_etl(spark, ds, EtlConfig(kcore=5, shuffle_partitions=args.shuffle_partitions), os.path.join(work, f"out_{n}"))["row_counts"]
            secs = time.time() - t
            rate = n / secs
            ratio = (secs / prev[1]) / (n / prev[0]) if prev else None
            print(f"size {n:>9,d}: {secs:8.1f} s  {rate:10,.0f} rows/s  kept {rc['interactions']:,}"
                  + (f"  time ratio / size ratio = {ratio:.2f}" if ratio else ""), flush=True)
            result[f"s_{n}"] = round(secs, 2)
            result[f"rows_per_s_{n}"] = round(rate, 1)
            if ratio:
                result[f"linearity_{prev[0]}_to_{n}"] = round(ratio, 3)
            prev = (n, secs)
            os.remove(src)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        spark.stop()
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
