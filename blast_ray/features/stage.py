"""The features stage: ``run(ctx, out)`` -> item_text / user_text (/ item_visual) float32 vectors
in row shards (layout and readers: ``blast_ray.features.artifacts``).

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
  Items whose image is absent, unreachable or undecodable get NO visual row; they are counted per
  reason (row_counts ``item_visual_missing.<reason>``) and listed in
  ``item_visual_rejects.parquet`` (item_idx, item_id, source, reason). Nothing visual exists for
  the shared datasets: they run text only.

How the text path streams (no process holds a table whose size grows with the data; the driver
holds O(N) keys and masks, 33 bytes per item/user):
1. keys: Ray Data reads the profiles part files and the ETL items (``parquet_rows``: one
   fractional-CPU task per part file, record batch by record batch) and computes each row's reuse key (``artifacts.text_key``: encoder, pooling, max length and the text); the
   driver collects only (idx, key).
2. reuse: the vectors of the latest committed features output of the dataset whose key equals
   this run's key for the same idx are copied shard by shard into this output; the others are
   encoded. Manifest ``extra["reuse"][<modality>] = {"encoded", "reused"}`` (+ row counts
   ``<modality>_encoded`` / ``_reused``), ``extra["reused_from"]``.
3. encode: the rows to encode are read again, filtered by the broadcast mask, and encoded by
   ``EncodeBatch`` actors (``map_batches``) that write each batch as a float32 row shard; only
   per-shard counts come back to the driver.
4. users without a profile: zero rows, written in chunks.
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
import pyarrow as pa
import pyarrow.parquet as pq

from blast_ray.etl import artifacts as etl_artifacts
from blast_ray.features import artifacts
from blast_ray.features.artifacts import (  # noqa: F401  (re-exported: the stage's public loaders)
    FEATURE_FILES,
    IDX_COLUMN,
    SHARD_ROWS,
    encoder_id,
    iter_vector_shards,
    load_feature_masks,
    load_features,
    table_vectors,
    text_key,
    vectors_table,
)
from blast_ray.features.encoders import MAX_LENGTH, MODALITY_OF_KIND, EncodeBatch
from blast_ray.features.images import resolve_image_source

log = logging.getLogger("blast_ray.features")

TEXT_MODALITIES = ("item_text", "user_text")
KEY_DTYPE = "S32"  # a text_key (32 hex chars); b"" where a row has no text to encode
TEXT_ROW_SCHEMA = pa.schema([("kind", pa.string()), ("idx", pa.int64()), ("text", pa.string()),
                             ("text_key", pa.string()), ("profile_key", pa.string())])
PROFILE_READ_COLUMNS = ["kind", "idx", "text", "key", "engine"]
ITEM_READ_COLUMNS = ["item_idx", "title", "brand", "categories", "description"]
READ_ROWS = 8192  # rows per record batch read from a part file
# Fractional on purpose: the read tasks must fit beside an encoder pool that holds most CPUs (e.g.
# features.num_cpus_per_actor=1.5 on a 2-CPU node). ``ray.data.read_parquet`` plans a ListFiles
# task and read tasks at 1 CPU each, which then never get scheduled there (a deadlock).
READ_CPUS = 0.25


def read_parquet_batches(batch: pd.DataFrame, fs, columns: list[str], fn, fn_kwargs: dict):
    """Ray Data UDF over a batch of Parquet paths: each file's record batches of ``READ_ROWS`` rows
    (``columns`` only), passed through ``fn(frame, **fn_kwargs)`` and yielded one at a time
    (memory: one record batch)."""
    for path in batch["path"]:
        with fs.open_input_file(path) as f:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=READ_ROWS, columns=columns):
                yield fn(rb.to_pandas(), **fn_kwargs)


def parquet_rows(ray, files, columns: list[str], fn, fn_kwargs: dict):
    """A Ray Data dataset of ``fn`` over every record batch of the part files ``files`` ((fs, paths)),
    one fractional-CPU task per file."""
    fs, paths = files
    return ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, len(paths))).map_batches(
        read_parquet_batches, batch_size=1, batch_format="pandas", num_cpus=READ_CPUS,
        fn_kwargs={"fs": fs, "columns": columns, "fn": fn, "fn_kwargs": fn_kwargs})


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



def _profile_text(batch: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(text as str, True where the profile has a non-blank text) of a profiles batch."""
    text = batch["text"].where(batch["text"].notna(), "").astype(str)
    return text, text.str.strip() != ""


# ---- Ray Data batch functions (run in Ray tasks; pure: a batch in, a batch out) --------------
def profile_keys_batch(batch: pd.DataFrame, enc_id: str) -> pd.DataFrame:
    """Profiles rows -> ``kind, idx, text_key ('' for a blank text), engine`` (no text)."""
    text, ok = _profile_text(batch)
    keys = [text_key(enc_id, t) if o else "" for t, o in zip(text, ok)]
    return pd.DataFrame({"kind": batch["kind"].astype(str).to_numpy(), "idx": batch["idx"].to_numpy(np.int64),
                         "text_key": keys, "engine": batch["engine"].astype(str).to_numpy()})


def raw_keys_batch(batch: pd.DataFrame, enc_id: str, has_profile: np.ndarray) -> pd.DataFrame:
    """ETL items rows -> ``idx, text_key, empty``: the key of the raw text of each item without a
    profile ('' for the items with one: their profile text is encoded)."""
    idx = batch["item_idx"].to_numpy(np.int64)
    inside = (idx >= 0) & (idx < len(has_profile))
    raw = inside & ~has_profile[np.where(inside, idx, 0)]
    text = raw_item_text(batch[raw]) if raw.any() else pd.Series([], dtype=object)
    keys = np.full(len(batch), "", dtype=object)
    empty = np.zeros(len(batch), dtype=bool)
    keys[raw] = [text_key(enc_id, t) for t in text]
    empty[raw] = (text.str.strip() == "").to_numpy(bool) if len(text) else []
    return pd.DataFrame({"idx": idx, "text_key": keys, "empty": empty})


def profile_rows_batch(batch: pd.DataFrame, enc_id: str, encode: dict) -> pa.Table:
    """Profiles rows -> the ``TEXT_ROW_SCHEMA`` rows to encode: kind k, idx i kept where
    ``encode[k][i]`` (a bool mask per kind; the blank texts are never in it)."""
    text, ok = _profile_text(batch)
    kind = batch["kind"].astype(str).to_numpy()
    idx = batch["idx"].to_numpy(np.int64)
    keep = np.zeros(len(batch), dtype=bool)
    for k, mask in encode.items():
        sel = (kind == k) & (idx >= 0) & (idx < len(mask))
        keep[sel] = mask[idx[sel]]
    keep &= ok.to_numpy(bool)
    t = text[keep].tolist()
    return pa.Table.from_pydict({
        "kind": kind[keep].tolist(), "idx": idx[keep], "text": t, "text_key": [text_key(enc_id, x) for x in t],
        "profile_key": [None if pd.isna(p) else str(p) for p in batch["key"][keep]],
    }, schema=TEXT_ROW_SCHEMA)


def raw_rows_batch(batch: pd.DataFrame, enc_id: str, encode: np.ndarray) -> pa.Table:
    """ETL items rows -> the ``TEXT_ROW_SCHEMA`` rows (kind 'item', raw text) where ``encode[idx]``."""
    idx = batch["item_idx"].to_numpy(np.int64)
    inside = (idx >= 0) & (idx < len(encode))
    keep = inside & encode[np.where(inside, idx, 0)]
    t = raw_item_text(batch[keep]).tolist() if keep.any() else []
    return pa.Table.from_pydict({"kind": ["item"] * len(t), "idx": idx[keep], "text": t,
                                 "text_key": [text_key(enc_id, x) for x in t], "profile_key": [None] * len(t)},
                                schema=TEXT_ROW_SCHEMA)


# ---- the driver's passes ------------------------------------------------------------------------
def _scatter_keys(dest: np.ndarray, idx: np.ndarray, keys, what: str) -> None:
    """dest[idx] = keys, each idx in range and set at most once (a one-line ValueError otherwise)."""
    if len(idx) and (idx.min() < 0 or idx.max() >= len(dest)):
        raise ValueError(f"{what}: idx {int(idx.min() if idx.min() < 0 else idx.max())} outside [0, {len(dest)}); "
                         "the profiles and ETL outputs disagree: rerun the profiles stage (`blast profiles --force`)")
    if len(idx) and ((dest[idx] != b"").any() or len(np.unique(idx)) != len(idx)):
        raise ValueError(f"{what}: an idx occurs twice; each item/user must have one profile row per kind "
                         "(rerun the profiles stage)")
    dest[idx] = np.asarray(keys, dtype=KEY_DTYPE)


def collect_keys(ray, enc_id: str, prof_files, item_files, n_items: int, n_users: int):
    """Pass 1: ``(keys {modality: S32 (n,)}, item_has_profile (n_items,), engines, empty_items)``."""
    keys = {"item_text": np.zeros(n_items, KEY_DTYPE), "user_text": np.zeros(n_users, KEY_DTYPE)}
    engines: set[str] = set()
    if prof_files is not None and prof_files[1]:
        ds = parquet_rows(ray, prof_files, PROFILE_READ_COLUMNS, profile_keys_batch, {"enc_id": enc_id})
        for b in ds.iter_batches(batch_format="pandas", batch_size=None):
            engines.update(b["engine"].unique().tolist())
            b = b[b["text_key"] != ""]
            for kind, name in MODALITY_OF_KIND.items():
                sel = b[b["kind"] == kind]
                _scatter_keys(keys[name], sel["idx"].to_numpy(np.int64), sel["text_key"].to_numpy(), f"{kind} profiles")
    has_profile = keys["item_text"] != b""
    ds = parquet_rows(ray, item_files, ITEM_READ_COLUMNS, raw_keys_batch, {"enc_id": enc_id, "has_profile": has_profile})
    seen = np.zeros(n_items, dtype=bool)
    empty = 0
    for b in ds.iter_batches(batch_format="pandas", batch_size=None):
        idx = b["idx"].to_numpy(np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= n_items or seen[idx].any() or len(np.unique(idx)) != len(idx)):
            raise ValueError(f"ETL items table must hold item_idx 0..{n_items - 1} exactly once; it repeats one or "
                             "leaves the range (rerun the etl stage)")
        seen[idx] = True
        raw = (b["text_key"] != "").to_numpy(bool)
        keys["item_text"][idx[raw]] = b["text_key"][raw].to_numpy().astype(KEY_DTYPE)
        empty += int(b["empty"].sum())
    if not seen.all():
        raise ValueError(f"ETL items table must hold item_idx 0..{n_items - 1} exactly once; "
                         f"{int((~seen).sum())} are missing (rerun the etl stage)")
    return keys, has_profile, engines, empty


def prior_keys(prior, name: str, n: int) -> np.ndarray:
    """S32 (n,): the reuse key of each idx in the prior output's ``name`` (b"" where none)."""
    out = np.zeros(n, KEY_DTYPE)
    if prior is None or name not in prior.manifest.get("extra", {}).get("modalities", []):
        return out
    for ids, keys in artifacts.iter_vector_keys(prior, name):
        ok = (ids >= 0) & (ids < n) & np.array([k is not None for k in keys], dtype=bool)
        out[ids[ok]] = keys[ok].astype(KEY_DTYPE)
    return out


def copy_reused(prior, out, name: str, keys: np.ndarray, reuse: np.ndarray) -> tuple[int, int | None]:
    """Copy the prior shards' rows whose idx is in ``reuse`` (and whose key equals ``keys[idx]``)
    into ``out`` as shards, one prior shard at a time; returns (rows copied, d)."""
    fs, paths = artifacts.vector_files(prior, name)
    idx_name = IDX_COLUMN[name]
    copied, dim = 0, None
    for path in paths:
        t = pq.read_table(path, filesystem=fs, columns=[idx_name, "vector", "text_key", "profile_key"])
        ids = t[idx_name].to_numpy()
        k = np.asarray([x or "" for x in t["text_key"].to_pylist()], dtype=KEY_DTYPE)
        inside = (ids >= 0) & (ids < len(reuse))
        pos = np.where(inside, ids, 0)
        keep = inside & reuse[pos] & (k == keys[pos])
        if keep.any():
            part = t.filter(pa.array(keep))
            dim = part.schema.field("vector").type.list_size
            artifacts.write_shard(out.store, out.parts, name, part.cast(artifacts.shard_schema(idx_name, dim)), "reused")
            copied += part.num_rows
    return copied, dim


def encode_rows(ray, cfg, out, enc_id: str, prof_files, item_files, encode: dict[str, np.ndarray],
                has_profile: np.ndarray) -> tuple[dict[str, int], dict[str, int]]:
    """Pass 3: encode the rows in ``encode`` (modality -> bool mask over idx) on the actor pool,
    which writes the shards; returns ({modality: rows encoded}, {modality: d})."""
    from blast_ray.progress import Progress

    total = int(sum(m.sum() for m in encode.values()))
    done = {name: 0 for name in encode}
    dims: dict[str, int] = {}
    if total == 0:
        return done, dims
    sources = []
    by_kind = {kind: encode[name] & (has_profile if kind == "item" else True)
               for kind, name in MODALITY_OF_KIND.items() if name in encode}
    if prof_files is not None and any(m.any() for m in by_kind.values()):
        sources.append(parquet_rows(ray, prof_files, PROFILE_READ_COLUMNS, profile_rows_batch,
                                    {"enc_id": enc_id, "encode": by_kind}))
    raw = encode["item_text"] & ~has_profile
    if raw.any():
        sources.append(parquet_rows(ray, item_files, ITEM_READ_COLUMNS, raw_rows_batch, {"enc_id": enc_id, "encode": raw}))
    ds = sources[0].union(*sources[1:]) if len(sources) > 1 else sources[0]
    rows_per_batch = int(min(SHARD_ROWS, max(cfg.batch_size * 4, -(-total // cfg.concurrency))))
    ds = ds.map_batches(
        EncodeBatch,
        fn_constructor_kwargs=dict(model=cfg.text_encoder, pooling=cfg.text_pooling, batch_size=cfg.batch_size,
                                   store=out.store, parts=out.parts, threads=max(1, int(round(cfg.num_cpus_per_actor)))),
        batch_size=rows_per_batch,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
        num_cpus=cfg.num_cpus_per_actor,  # fractional: a pool holding every CPU starves the read tasks (2-CPU deadlock)
    )
    progress = Progress("features: text", total, "rows")
    for b in ds.iter_batches(batch_format="pandas", batch_size=None):
        for name, rows, dim in zip(b["modality"], b["rows"], b["dim"]):
            done[name] += int(rows)
            dims[name] = int(dim)
            progress.update(int(rows))
    progress.close()
    for name, mask in encode.items():
        if done[name] != int(mask.sum()):
            raise RuntimeError(f"features {name}: {done[name]} rows encoded, {int(mask.sum())} expected (lost rows)")
    return done, dims


def write_zero_rows(out, name: str, idx: np.ndarray, dim: int) -> None:
    """Zero vectors for ``idx`` (users without a profile), in shards of ``SHARD_ROWS``."""
    for s in range(0, len(idx), SHARD_ROWS):
        e = min(len(idx), s + SHARD_ROWS)
        artifacts.write_shard(out.store, out.parts, name,
                              artifacts.shard_table(name, idx[s:e], np.zeros((e - s, dim), np.float32)), "zero")


def run(ctx, out) -> dict:
    from blast_ray.runtime import ensure_ray
    from blast_ray.store import latest_output

    cfg = ctx.cfg.features
    etl = ctx.require("etl")
    t0 = time.time()
    counts = etl.manifest.get("row_counts", {})
    item_files = etl_artifacts.table_files(etl, etl_artifacts.ITEMS)
    if "items" in counts:
        n_items = int(counts["items"])
    else:  # the Parquet footers: no data read
        n_items = sum(pq.ParquetFile(p, filesystem=item_files[0]).metadata.num_rows for p in item_files[1])
    n_users = int(counts.get("users", 0))
    ray = ensure_ray()

    prof_out = ctx.outputs.get("profiles")
    prof_files = None
    if prof_out is not None:
        from blast_ray.profiles.artifacts import profiles_files

        prof_files = profiles_files(prof_out)
    else:
        log.warning("no profiles output: items are encoded from their raw ETL text, users get no text feature")

    enc_id = encoder_id(cfg.text_encoder, cfg.text_pooling, MAX_LENGTH)
    keys, has_profile, engines, n_empty = collect_keys(ray, enc_id, prof_files, item_files, n_items, n_users)
    row_counts: dict[str, int] = {}
    extra: dict = {"text_encoder": cfg.text_encoder, "text_pooling": cfg.text_pooling, "text_source": {}, "dims": {},
                   "n_items": n_items, "n_users": n_users}
    timings: dict[str, float] = {"read_s": round(time.time() - t0, 3)}
    modalities: list[str] = []

    n_fallback = int((~has_profile).sum())
    if prof_out is not None:
        if n_fallback:
            log.warning("%d of %d items have no profile: encoded from raw item text", n_fallback, n_items)
        extra["text_source"]["item"] = "profiles" if n_fallback == 0 else "profiles+raw"
        extra["profiles_engine"] = sorted(engines)
    else:
        extra["text_source"]["item"] = "raw"
    if n_empty:
        log.warning("%d items have no text at all: encoded as the empty string", n_empty)
    row_counts["item_text_raw_fallback"] = n_fallback
    row_counts["item_text_empty"] = n_empty
    text_names = ["item_text"]
    if (keys["user_text"] != b"").any():
        text_names.append("user_text")
        extra["text_source"]["user"] = "profiles"
    else:
        log.warning("no user profiles: no user_text feature (the user-user graph will be skipped)")

    # ---- reuse the vectors of unchanged texts from the latest committed features output
    t1 = time.time()
    prior = latest_output(ctx.store, ctx.dataset, "features")
    prior = prior if prior is not None and prior.fingerprint != out.fingerprint else None
    encode, reused, dims = {}, {}, {}
    for name in text_names:
        has = keys[name] != b""
        reuse = has & (prior_keys(prior, name, len(has)) == keys[name])
        reused[name], dims[name] = copy_reused(prior, out, name, keys[name], reuse) if reuse.any() else (0, None)
        if reused[name] != int(reuse.sum()):
            raise RuntimeError(f"features {name}: copied {reused[name]} reused rows, {int(reuse.sum())} expected "
                               f"(the prior output {prior.uri() if prior else None} is inconsistent: --force features)")
        encode[name] = has & ~reuse
    timings["reuse_s"] = round(time.time() - t1, 3)

    # ---- encode the new and changed texts (the actors write the shards)
    t1 = time.time()
    encoded, enc_dims = encode_rows(ray, cfg, out, enc_id, prof_files, item_files, encode, has_profile)
    timings["encode_s"] = round(time.time() - t1, 3)
    extra["reuse"] = {name: {"encoded": encoded[name], "reused": reused[name]} for name in text_names}
    extra["reused_from"] = prior.fingerprint if prior is not None and any(reused.values()) else None
    for name in text_names:
        dims[name] = enc_dims.get(name) or dims[name]
        row_counts[f"{name}_encoded"] = encoded[name]
        row_counts[f"{name}_reused"] = reused[name]
        log.info("features %s: %d encoded, %d reused%s", name, encoded[name], reused[name],
                 f" from {prior.fingerprint}" if reused[name] else "")

    row_counts["item_text"] = n_items
    extra["dims"]["item_text"] = int(dims["item_text"])
    modalities.append("item_text")
    if "user_text" in text_names:
        missing = np.flatnonzero(keys["user_text"] == b"")
        if len(missing):
            log.warning("%d of %d users have no profile: zero user_text vector (counted)", len(missing), n_users)
        write_zero_rows(out, "user_text", missing, int(dims["user_text"]))
        row_counts["user_text_missing"] = len(missing)
        row_counts["user_text"] = n_users
        extra["dims"]["user_text"] = int(dims["user_text"])
        modalities.append("user_text")

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
        items = etl_artifacts.load_frame(etl, etl_artifacts.ITEMS, columns=["item_idx", "item_id", "image_url"])
        items = items.sort_values("item_idx").reset_index(drop=True)
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
