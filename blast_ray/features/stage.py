"""The features stage: ``run(ctx, out)`` -> item_text / user_text (/ item_visual) Parquet vectors.

What gets encoded (method doc section 1, "Encode"):
- items: the profiles' ``summarization`` text (``profiles`` table, kind='item'); items without a
  profile (or every item when the profiles stage is absent) fall back to their raw ETL text
  (title + brand + categories + description), counted in ``row_counts['item_text_raw_fallback']``.
- users: the user profiles' text; without a profiles output there is NO user text feature (the
  user-user graph is then skipped downstream). Users with no profile get a zero vector, counted.
- visual: precomputed vectors from ``features.visual_features`` (.npy N x D in item order, or
  Parquet item_idx + vector). Nothing visual exists for the shared datasets: text only.

Each file is ``<idx column>, vector fixed_size_list<float32>[d]`` sorted by idx; manifest extra
``{"modalities": [...], "text_source": {...}, "dims": {...}}``.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from blast_ray.features.encoders import encode_on_ray

log = logging.getLogger("blast_ray.features")

FEATURE_FILES = {"item_text": "item_text.parquet", "user_text": "user_text.parquet", "item_visual": "item_visual.parquet"}
IDX_COLUMN = {"item_text": "item_idx", "user_text": "user_idx", "item_visual": "item_idx"}


def vectors_table(idx_name: str, ids: np.ndarray, vecs: np.ndarray) -> pa.Table:
    """``idx_name`` int64 + ``vector`` fixed_size_list<float32>[d] (one row per id)."""
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or len(vecs) != len(ids):
        raise ValueError(f"vectors shape {vecs.shape} does not match {len(ids)} ids")
    flat = pa.array(vecs.reshape(-1), type=pa.float32())
    return pa.table({idx_name: pa.array(np.asarray(ids, dtype=np.int64)),
                     "vector": pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1])})


def table_vectors(table: pa.Table, idx_name: str, n: int | None = None) -> np.ndarray:
    """(n, d) float32 rows in idx order from a vectors table; every idx in [0, n) must be present once."""
    ids = table[idx_name].to_numpy()
    col = table["vector"].combine_chunks()
    d = col.type.list_size if pa.types.is_fixed_size_list(col.type) else len(col[0])
    vals = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(ids), d)
    n = int(ids.max()) + 1 if n is None else n
    if len(ids) != n or len(np.unique(ids)) != n or (len(ids) and (ids.min() < 0 or ids.max() >= n)):
        raise ValueError(f"vector table keyed by {idx_name} must hold each idx in [0, {n}) exactly once; has {len(ids)} rows")
    out = np.empty((n, d), dtype=np.float32)
    out[ids] = vals
    return out


def raw_item_text(items: pd.DataFrame) -> pd.Series:
    """title. brand. categories. description -- the fallback text of an item (nulls skipped)."""

    def one(row) -> str:
        parts = []
        for f in ("title", "brand"):
            v = row.get(f)
            if isinstance(v, str) and v.strip():
                parts.append(v.strip())
        cats = row.get("categories")
        if cats is not None and not isinstance(cats, str) and len(cats):
            parts.append(", ".join(str(c) for c in cats))
        desc = row.get("description")
        if isinstance(desc, str) and desc.strip():
            parts.append(desc.strip())
        return ". ".join(parts)

    return items.apply(one, axis=1)


def load_visual(path: str, n_items: int) -> np.ndarray:
    """Precomputed visual features: .npy (N x D, item order, as MMRec ships image_feat.npy) or
    Parquet with item_idx + vector."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"features.visual_features={path!r} does not exist")
    if path.endswith(".npy"):
        x = np.load(path).astype(np.float32)
        if x.ndim != 2 or len(x) != n_items:
            raise ValueError(f"features.visual_features {path}: shape {x.shape}, expected ({n_items}, D)")
        return x
    if path.endswith(".parquet"):
        return table_vectors(pq.read_table(path), "item_idx", n_items)
    raise ValueError(f"features.visual_features={path!r}: expected a .npy or .parquet file")


def _encode(frame: pd.DataFrame, cfg) -> tuple[np.ndarray, np.ndarray]:
    return encode_on_ray(frame, cfg.text_encoder, cfg.text_pooling, cfg.batch_size, cfg.concurrency, cfg.num_cpus_per_actor)


def run(ctx, out) -> dict:
    cfg = ctx.cfg.features
    etl = ctx.require("etl")
    t0 = time.time()
    store = ctx.store
    items = store.read_table(*etl.parts, "items").to_pandas().sort_values("item_idx").reset_index(drop=True)
    n_items = int(etl.manifest.get("row_counts", {}).get("items", len(items)))
    n_users = int(etl.manifest.get("row_counts", {}).get("users", 0))
    if len(items) != n_items or (len(items) and items["item_idx"].to_numpy().tolist() != list(range(n_items))):
        raise ValueError(f"ETL items table must hold item_idx 0..{n_items - 1} exactly once; has {len(items)} rows")

    prof_out = ctx.outputs.get("profiles")
    profiles = None
    if prof_out is not None:
        from blast_ray.profiles import load_profiles

        profiles = load_profiles(prof_out)
    else:
        log.warning("no profiles output: items are encoded from their raw ETL text, users get no text feature")

    row_counts: dict[str, int] = {}
    extra: dict = {"text_encoder": cfg.text_encoder, "text_pooling": cfg.text_pooling, "text_source": {}, "dims": {}}
    timings: dict[str, float] = {"read_s": round(time.time() - t0, 3)}
    modalities: list[str] = []

    # ---- items: profile text, else raw text
    text = raw_item_text(items)
    n_fallback = n_items
    if profiles is not None:
        ip = profiles[profiles["kind"] == "item"].drop_duplicates("idx", keep="last").set_index("idx")["text"]
        have = items["item_idx"].map(ip)
        ok = have.notna() & (have.astype(str).str.strip() != "")
        text = text.where(~ok, have.astype(str))
        n_fallback = int((~ok).sum())
        if n_fallback:
            log.warning("%d of %d items have no profile: encoded from raw item text", n_fallback, n_items)
        extra["text_source"]["item"] = "profiles" if n_fallback == 0 else "profiles+raw"
        extra["profiles_engine"] = sorted(set(profiles["engine"].astype(str)))
    else:
        extra["text_source"]["item"] = "raw"
    empty = int((text.str.strip() == "").sum())
    if empty:
        log.warning("%d items have no text at all: encoded as the empty string", empty)
    row_counts["item_text_raw_fallback"] = n_fallback
    row_counts["item_text_empty"] = empty
    t1 = time.time()
    ids, vecs = _encode(pd.DataFrame({"idx": items["item_idx"].to_numpy(), "text": text.to_numpy()}), cfg)
    store.write_table(vectors_table("item_idx", ids, vecs), *out.parts, FEATURE_FILES["item_text"])
    timings["item_text_s"] = round(time.time() - t1, 3)
    row_counts["item_text"] = len(ids)
    extra["dims"]["item_text"] = int(vecs.shape[1])
    modalities.append("item_text")

    # ---- users: profile text only
    if profiles is not None and (profiles["kind"] == "user").any():
        up = profiles[(profiles["kind"] == "user")].drop_duplicates("idx", keep="last")
        up = up[up["text"].astype(str).str.strip() != ""]
        bad = up[(up["idx"] < 0) | (up["idx"] >= n_users)]
        if len(bad):
            raise ValueError(f"{len(bad)} user profiles have idx outside [0, {n_users})")
        t1 = time.time()
        uids, uvecs = _encode(pd.DataFrame({"idx": up["idx"].to_numpy(np.int64), "text": up["text"].to_numpy()}), cfg)
        full = np.zeros((n_users, uvecs.shape[1]), dtype=np.float32)
        full[uids] = uvecs
        missing = n_users - len(uids)
        if missing:
            log.warning("%d of %d users have no profile: zero user_text vector (counted)", missing, n_users)
        row_counts["user_text_missing"] = missing
        store.write_table(vectors_table("user_idx", np.arange(n_users), full), *out.parts, FEATURE_FILES["user_text"])
        timings["user_text_s"] = round(time.time() - t1, 3)
        row_counts["user_text"] = n_users
        extra["dims"]["user_text"] = int(full.shape[1])
        extra["text_source"]["user"] = "profiles"
        modalities.append("user_text")
    else:
        log.warning("no user profiles: no user_text feature (the user-user graph will be skipped)")

    # ---- visual: precomputed only
    if cfg.visual_features:
        x = load_visual(cfg.visual_features, n_items)
        store.write_table(vectors_table("item_idx", np.arange(n_items), x), *out.parts, FEATURE_FILES["item_visual"])
        row_counts["item_visual"] = n_items
        extra["dims"]["item_visual"] = int(x.shape[1])
        modalities.append("item_visual")
    else:
        log.info("no visual features configured (features.visual_features empty): text only")
    if cfg.compute_image_features:
        raise NotImplementedError(
            "features.compute_image_features=true: the CNN image path is not implemented; "
            "pass precomputed vectors with features.visual_features"
        )

    log.info("features: modalities %s", modalities)
    extra["modalities"] = modalities
    timings["total_s"] = round(time.time() - t0, 3)
    return {"row_counts": row_counts, "timings": timings, "extra": extra, "metrics": {}}


def load_features(out) -> dict[str, np.ndarray]:
    """name -> (rows in idx order, d) float32 for each modality of a committed features output."""
    manifest = out.manifest
    res = {}
    for name in manifest.get("extra", {}).get("modalities", []):
        table = out.store.read_table(*out.parts, FEATURE_FILES[name])
        res[name] = table_vectors(table, IDX_COLUMN[name])
    return res
