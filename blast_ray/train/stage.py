"""The train stage: read ETL (+ features, graphs, augmentation when present), fit, write
model.pt, users.npy/items.npy (final h_u, f_i), history.parquet, metrics.json."""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from blast_ray.train.trainer import TrainInputs, build_model, final_outputs, fit
from blast_ray.train.warm_start import load_warm_start

log = logging.getLogger("blast_ray.train")


def _side_inputs(ctx, data) -> TrainInputs:
    inputs = TrainInputs(data)
    cfg = ctx.cfg
    if "features" in ctx.outputs:
        try:
            from blast_ray.features import load_features
        except ImportError as e:
            raise RuntimeError(f"train: features output present but blast_ray.features.load_features is missing: {e}") from e
        inputs.features = {k: np.asarray(v, dtype=np.float32) for k, v in load_features(ctx.outputs["features"]).items()}
    if "graphs" in ctx.outputs:
        try:
            from blast_ray.graphs import load_graph
        except ImportError as e:
            raise RuntimeError(f"train: graphs output present but blast_ray.graphs.load_graph is missing: {e}") from e
        g = ctx.outputs["graphs"]
        for kind in ("item", "user"):
            try:
                m = load_graph(g, kind)
            except FileNotFoundError:
                log.warning("train: graphs output has no %s graph; that branch is dropped", kind)
                continue
            setattr(inputs, f"{kind}_graph", m)
    if "augment" in ctx.outputs and cfg.augment.enabled:
        from blast_ray.augment import load_augmentation

        aug = load_augmentation(ctx.outputs["augment"], data.n_users, data.n_items)
        inputs.extra_users, inputs.extra_items = np.asarray(aug.users), np.asarray(aug.items)
        if getattr(cfg.augment, "restrict_negatives", False):
            inputs.neg_exclude = (data.train + aug.false_negatives).tocsr()
        log.debug("train: %d augmented pairs; negatives restricted: %s", len(inputs.extra_users), inputs.neg_exclude is not None)
    return inputs


def run(ctx, out) -> dict[str, Any]:
    from blast_ray.data import load_interactions

    cfg, ev = ctx.cfg.train, ctx.cfg.evaluate
    t0 = time.perf_counter()
    data = load_interactions(ctx.require("etl"))
    inputs = _side_inputs(ctx, data)
    fingerprint = out.parts[-1]
    warm = None
    if cfg.warm_start_from:  # part of the train section, hence of this output's fingerprint
        warm = load_warm_start(cfg.warm_start_from, build_model(cfg, inputs), cfg.model, data.n_users, data.n_items)
    state = fit(cfg, inputs, store=ctx.store, checkpoint_parts=(ctx.dataset, "checkpoints", fingerprint),
                ks=tuple(ev.ks), batch_users=ev.batch_users,
                init_state=warm.state_dict if warm else None, init_source=cfg.warm_start_from or "")
    t_fit = time.perf_counter() - t0
    model, h_u, f_i, valid, test = final_outputs(cfg, inputs, state, tuple(ev.ks), ev.batch_users)
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "config": state["config"], "n_users": data.n_users, "n_items": data.n_items}, buf)
    out.store.write_bytes(buf.getvalue(), *out.parts, "model.pt")
    for name, arr in (("users.npy", h_u), ("items.npy", f_i)):
        b = io.BytesIO()
        np.save(b, arr.astype(np.float32))
        out.store.write_bytes(b.getvalue(), *out.parts, name)
    out.store.write_table(pa.Table.from_pandas(pd.DataFrame(state["history"]), preserve_index=False), *out.parts, "history.parquet")
    metrics = {f"valid.{k}": v for k, v in valid.items() if k != "n_users"}
    metrics.update({f"test.{k}": v for k, v in test.items() if k != "n_users"})
    metrics["best_epoch"] = int(state["best_epoch"])
    out.store.write_text(json.dumps(metrics, indent=1), *out.parts, "metrics.json")
    return {
        "row_counts": {"users": data.n_users, "items": data.n_items, "epochs": len(state["history"])},
        "timings": {"fit_seconds": t_fit, "total_seconds": time.perf_counter() - t0},
        "extra": {"model": cfg.model, "used": inputs.used_modalities(cfg.model), "num_workers": cfg.num_workers,
                  **(warm.manifest_extra() if warm else {"warm_start_from": None, "warm_started": False})},
        "metrics": metrics,
    }


def load_embeddings(train_output) -> tuple[np.ndarray, np.ndarray]:
    """(users (M, d), items (N, d)) final representations of a committed train output."""
    s = train_output.store
    u = np.load(io.BytesIO(s.read_bytes(*train_output.parts, "users.npy")))
    i = np.load(io.BytesIO(s.read_bytes(*train_output.parts, "items.npy")))
    return u, i
