"""The features stage: ``run(ctx, out)`` -> item_text / user_text (/ item_visual) Parquet vectors.

What gets encoded (method doc section 1, "Encode"):
- items: the profiles' ``summarization`` text (``profiles`` table, kind='item'); items without a
  profile (or every item when the profiles stage is absent) fall back to their raw ETL text
  (title + brand + categories + description), counted in ``row_counts['item_text_raw_fallback']``.
- users: the user profiles' text; without a profiles output there is NO user text feature (the
  user-user graph is then skipped downstream). Users with no profile get a zero vector, counted.
- visual: precomputed vectors from ``features.visual_features`` (.npy N x D in item order, or
  Parquet item_idx + vector), or, with ``features.compute_image_features``, EfficientNet-Lite0
  pooled 1,280-d features of each item's image (``features.image_dir``/<item_id>.jpg|png|..., else
  items.image_url: local path, file:// or http(s)) on a Ray Data actor pool (``images.py``).
  Items whose image is absent, unreachable or undecodable get NO row in item_visual.parquet; they
  are counted per reason (row_counts ``item_visual_missing.<reason>``) and listed in
  ``item_visual_rejects.parquet`` (item_idx, item_id, source, reason). Nothing visual exists for
  the shared datasets: they run text only.

Each file is ``<idx column>, vector fixed_size_list<float32>[d]`` sorted by idx; manifest extra
``{"modalities": [...], "text_source": {...}, "dims": {...}, "n_items", "n_users"}``.
``load_features`` returns full (N, d) arrays (rows of items without a visual vector are zero);
``load_feature_masks`` says which rows hold a real vector (the graphs stage gives the others no
visual edges).
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from blast_ray.etl import artifacts as etl_artifacts
from blast_ray.features import artifacts
from blast_ray.features.artifacts import (  # noqa: F401  (re-exported: the stage's public loaders)
    FEATURE_FILES,
    IDX_COLUMN,
    load_feature_masks,
    load_features,
    table_vectors,
    vectors_table,
)
from blast_ray.features.encoders import encode_on_ray
from blast_ray.features.images import resolve_image_source

log = logging.getLogger("blast_ray.features")


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
        x = np.load(path, allow_pickle=False).astype(np.float32)  # numbers only: never unpickle a file
        if x.ndim != 2 or len(x) != n_items:
            raise ValueError(f"features.visual_features {path}: shape {x.shape}, expected ({n_items}, D)")
        return x
    if path.endswith(".parquet"):
        return table_vectors(pq.read_table(path), "item_idx", n_items)
    raise ValueError(f"features.visual_features={path!r}: expected a .npy or .parquet file")


def compute_visual(items: pd.DataFrame, cfg) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """CNN vectors of the items whose image resolves and decodes: (ids, vectors, rejects).

    ``rejects``: item_idx, item_id, source, reason for every item without a vector (reason
    ``no_source`` when it has neither an image_dir file nor an image_url).
    """
    from blast_ray.features.images import encode_images_on_ray

    src = [resolve_image_source(i, u, cfg.image_dir) for i, u in zip(items["item_id"], items["image_url"])]
    frame = pd.DataFrame({"idx": items["item_idx"].to_numpy(np.int64), "item_id": items["item_id"].astype(str),
                          "source": src})
    have = frame["source"].notna()
    ids, vecs, failed = encode_images_on_ray(
        frame[have], cfg.image_encoder, cfg.image_batch_size, cfg.concurrency, cfg.num_cpus_per_actor, cfg.image_timeout_s)
    no_source = frame.loc[~have, ["idx", "item_id", "source"]].assign(reason="no_source")
    failed = failed.merge(frame[["idx", "item_id", "source"]], on="idx", how="left")
    rejects = pd.concat([no_source, failed[["idx", "item_id", "source", "reason"]]], ignore_index=True)
    rejects = rejects.rename(columns={"idx": "item_idx"}).sort_values("item_idx", kind="stable").reset_index(drop=True)
    if len(ids) + len(rejects) != len(items):
        raise RuntimeError(f"image encoding lost rows: {len(ids)} vectors + {len(rejects)} rejects != {len(items)} items")
    return ids, vecs, rejects


def _encode(frame: pd.DataFrame, cfg) -> tuple[np.ndarray, np.ndarray]:
    return encode_on_ray(frame, cfg.text_encoder, cfg.text_pooling, cfg.batch_size, cfg.concurrency, cfg.num_cpus_per_actor)


def run(ctx, out) -> dict:
    cfg = ctx.cfg.features
    etl = ctx.require("etl")
    t0 = time.time()
    items = etl_artifacts.load_frame(etl, etl_artifacts.ITEMS).sort_values("item_idx").reset_index(drop=True)
    n_items = int(etl.manifest.get("row_counts", {}).get("items", len(items)))
    n_users = int(etl.manifest.get("row_counts", {}).get("users", 0))
    if len(items) != n_items or (len(items) and items["item_idx"].to_numpy().tolist() != list(range(n_items))):
        raise ValueError(f"ETL items table must hold item_idx 0..{n_items - 1} exactly once; has {len(items)} rows")

    prof_out = ctx.outputs.get("profiles")
    profiles = None
    if prof_out is not None:
        from blast_ray.profiles.artifacts import load_profiles

        profiles = load_profiles(prof_out)
    else:
        log.warning("no profiles output: items are encoded from their raw ETL text, users get no text feature")

    row_counts: dict[str, int] = {}
    extra: dict = {"text_encoder": cfg.text_encoder, "text_pooling": cfg.text_pooling, "text_source": {}, "dims": {},
                   "n_items": n_items, "n_users": n_users}
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
    artifacts.write_vectors(out, "item_text", ids, vecs)
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
        artifacts.write_vectors(out, "user_text", np.arange(n_users), full)
        timings["user_text_s"] = round(time.time() - t1, 3)
        row_counts["user_text"] = n_users
        extra["dims"]["user_text"] = int(full.shape[1])
        extra["text_source"]["user"] = "profiles"
        modalities.append("user_text")
    else:
        log.warning("no user profiles: no user_text feature (the user-user graph will be skipped)")

    # ---- visual: precomputed, or CNN over the items' images
    if cfg.visual_features:
        x = load_visual(cfg.visual_features, n_items)
        artifacts.write_vectors(out, "item_visual", np.arange(n_items), x)
        row_counts["item_visual"] = n_items
        extra["dims"]["item_visual"] = int(x.shape[1])
        extra["visual_source"] = "precomputed"
        modalities.append("item_visual")
    elif cfg.compute_image_features:
        t1 = time.time()
        vids, vvecs, rejects = compute_visual(items, cfg)
        timings["item_visual_s"] = round(time.time() - t1, 3)
        reasons = rejects["reason"].value_counts().sort_index().to_dict()
        for reason, count in reasons.items():
            row_counts[f"item_visual_missing.{reason}"] = int(count)
        row_counts["item_visual"] = len(vids)
        row_counts["item_visual_missing"] = len(rejects)
        if len(rejects):
            log.warning("%d of %d items have no visual vector (no visual edges in the graphs): %s",
                        len(rejects), n_items, reasons)
            artifacts.write_visual_rejects(out, rejects)
        if len(vids):
            artifacts.write_vectors(out, "item_visual", vids, vvecs)
            extra["dims"]["item_visual"] = int(vvecs.shape[1])
            extra["visual_source"] = f"cnn:{cfg.image_encoder}"
            modalities.append("item_visual")
        else:
            log.warning("no item image could be used: no visual modality (text only)")
            extra["visual_source"] = "none: no usable image"
    else:
        log.debug("no visual features configured (features.visual_features / compute_image_features): text only")

    log.debug("features: modalities %s", modalities)
    extra["modalities"] = modalities
    timings["total_s"] = round(time.time() - t0, 3)
    return {"row_counts": row_counts, "timings": timings, "extra": extra, "metrics": {}}
