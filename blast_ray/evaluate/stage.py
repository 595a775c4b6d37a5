"""The evaluate stage: full-ranking metrics of the trained representations on valid and test
(valid: train masked; test: train + valid masked, as MMRec), written to metrics.parquet."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import pyarrow as pa
import torch

from blast_ray.evaluate.metrics import evaluate_ranking


def run(ctx, out) -> dict[str, Any]:
    from blast_ray.data import load_interactions
    from blast_ray.train.stage import load_embeddings

    ev = ctx.cfg.evaluate
    data = load_interactions(ctx.require("etl"))
    h_u, f_i = (torch.from_numpy(a) for a in load_embeddings(ctx.require("train")))
    t0 = time.perf_counter()
    valid = evaluate_ranking(h_u, f_i, data.valid, data.train, tuple(ev.ks), ev.batch_users)
    t_valid = time.perf_counter() - t0
    test = evaluate_ranking(h_u, f_i, data.test, (data.train + data.valid).tocsr(), tuple(ev.ks), ev.batch_users)
    rows = [{"split": s, "metric": k, "value": float(v)} for s, m in (("valid", valid), ("test", test)) for k, v in m.items()]
    out.store.write_table(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False), *out.parts, "metrics.parquet")
    metrics = {f"{s}.{k}": float(v) for s, m in (("valid", valid), ("test", test)) for k, v in m.items() if k != "n_users"}
    return {"row_counts": {"metrics": len(rows)}, "timings": {"full_ranking_seconds": t_valid}, "metrics": metrics}
