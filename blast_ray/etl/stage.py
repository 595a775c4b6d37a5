"""The ETL stage: raw published dumps -> clean Parquet tables (the shared ETL contract).

``run(ctx, out)`` is the pipeline entry point; :func:`run_etl` is the engine-level function
(SparkSession + configs + a local destination folder) used by it and by ``spark/etl_job.py``.

Counts reconcile exactly (checked before anything is written)::

    raw_records = interactions + rejected + removed_by_kcore + collapsed_duplicates
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from blast_ray.config import DatasetConfig, EtlConfig
from blast_ray.etl import artifacts
from blast_ray.etl.artifacts import TABLES
from blast_ray.store.hashing import stable_hash
from blast_ray.etl.readers import FormatError, read_raw
from blast_ray.etl.sparkio import get_spark
from blast_ray.etl.transform import clean_text, collapse_duplicates, extend_ids, kcore, split_per_user

log = logging.getLogger("blast_ray.etl")


def _files_of(path: str) -> list[Path]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    return sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]


def raw_input_hash(dataset: DatasetConfig, etl: EtlConfig, chunk: int = 1 << 20) -> str:
    """sha256 of every input file's bytes (streamed in 1 MiB chunks) + format + the etl config.

    A missing input fails here, before any Spark work, with one line naming the role.
    """
    h = hashlib.sha256()
    h.update(dataset.format.encode())
    for role in sorted(dataset.paths):
        path = dataset.paths[role]
        if "://" in path:  # remote input: identified by its URI (cannot stream it without the jars)
            h.update(f"{role}={path}".encode())
            continue
        if not Path(path).exists():
            raise FileNotFoundError(f"dataset.paths.{role}: {path} does not exist")
        for f in _files_of(path):
            h.update(f"{role}:{f.name}:{f.stat().st_size}".encode())
            with open(f, "rb") as fh:
                while block := fh.read(chunk):
                    h.update(block)
    h.update(stable_hash(etl).encode())
    return h.hexdigest()[:16]


def raw_inputs(cfg) -> dict[str, str]:
    """The ETL's StageOutput inputs: {"raw": raw_input_hash}, so changed raw files re-run it."""
    return {"raw": raw_input_hash(cfg.dataset, cfg.etl)}


def _counts_by(df, col: str) -> dict[str, int]:
    return {str(r[col]): int(r["count"]) for r in df.groupBy(col).count().collect()}  # one row per reason


def _collect_rejects(frame, reject_frames: list):
    """Checkpoint a side table (item meta, user side), queue its rejected rows for rejects/, and
    return (checkpointed frame with all rows, row count, rejected count)."""
    from pyspark.sql import functions as F

    frame = frame.localCheckpoint(eager=True)
    rejected = frame.filter(F.col("reason").isNotNull())
    reject_frames.append(rejected.select("source", "line", "reason", "raw"))
    return frame, frame.count(), rejected.count()


def run_etl(spark, dataset: DatasetConfig, etl: EtlConfig, dest: str) -> dict[str, Any]:
    """Run the whole ETL and write the tables under the local folder ``dest``.

    Returns {"row_counts", "timings", "extra"}. Raises FormatError / FileNotFoundError (one line)
    for inputs that cannot be read at all; bad records never raise, they go to ``rejects/``.
    """
    from pyspark.sql import functions as F

    t0 = time.time()
    timings: dict[str, float] = {}
    frames = read_raw(spark, dataset.format, dataset.paths)
    rec = frames.records
    if etl.min_rating is not None:
        rec = rec.withColumn(
            "reason", F.coalesce("reason", F.when(F.col("rating") < F.lit(etl.min_rating), F.lit("below_min_rating")))
        )
    rec = rec.localCheckpoint(eager=True)
    raw_n = rec.count()
    reject_counts = _counts_by(rec.filter(F.col("reason").isNotNull()), "reason")
    rejected = sum(reject_counts.values())
    good = rec.filter(F.col("reason").isNull())
    good_n = raw_n - rejected
    timings["read_s"] = round(time.time() - t0, 3)

    t = time.time()
    # the heavy text (raw line, review text, summary) stays out of the shuffles of deduplication,
    # k-core and the id joins: they move only ids, numbers and the record key (source, line, pos),
    # and the text is joined back once, for the kept records (reviews table below)
    dedup = collapse_duplicates(good.select(*LIGHT_RECORD_COLUMNS)).localCheckpoint(eager=True)
    dedup_n = dedup.count()
    kept, rounds = kcore(dedup, etl.kcore)
    kept_n = kept.count()
    timings["clean_kcore_s"] = round(time.time() - t, 3)
    if kept_n == 0:
        raise ValueError(
            f"no interactions left after cleaning and {etl.kcore}-core filtering "
            f"({raw_n} raw records, {rejected} rejected); lower etl.kcore"
        )

    t = time.time()
    previous = _previous_ids(spark, etl.id_dictionary_from)
    users, user_ids = extend_ids(kept, "user_id", "user_idx", previous.get(artifacts.USERS))
    items, item_ids = extend_ids(kept, "item_id", "item_idx", previous.get(artifacts.ITEMS))
    inter = kept.join(users, "user_id").join(items, "item_id")
    if frames.presplit and etl.keep_presplit:
        inter = inter.withColumn("split", F.col("split_in"))
    else:
        inter = split_per_user(inter, etl.seed, etl.split)
    inter = inter.localCheckpoint(eager=True)
    n_users, n_items = users.count(), items.count()
    split_counts = _counts_by(inter, "split")
    timings["ids_split_s"] = round(time.time() - t, 3)

    t = time.time()
    tables = {
        "interactions": inter.select("user_idx", "item_idx", "rating", "timestamp", "split").orderBy("user_idx", "item_idx"),
        "reviews": join_text_back(inter.select("user_idx", "item_idx", *RECORD_KEY), good)
        .filter(F.col("text").isNotNull() | F.col("summary").isNotNull())
        .select("user_idx", "item_idx", "text", "summary").orderBy("user_idx", "item_idx"),
    }
    reject_frames = [rec.filter(F.col("reason").isNotNull()).select("source", "line", "reason", "raw")]
    row_counts: dict[str, int] = {}
    extra: dict[str, Any] = {"format": dataset.format, "kcore_rounds": rounds, "split": split_counts, "presplit_kept": bool(frames.presplit and etl.keep_presplit),
                             "id_dictionary": {"from": etl.id_dictionary_from, "users": user_ids, "items": item_ids}}

    item_cols = ["item_idx", "item_id", "title", "description", "brand", "categories", "image_url"]
    if frames.items is not None:
        meta, meta_n, meta_rej_n = _collect_rejects(frames.items, reject_frames)
        # the winner per item is chosen on (item_id, source, line) only; the raw JSON, description
        # and the other meta text are joined back once, for the winners of the kept items
        winners = collapse_meta(meta.filter(F.col("reason").isNull()).select("item_id", "source", "line"))
        winners = winners.localCheckpoint(eager=True)
        row_counts.update(meta_records=meta_n, meta_rejected=meta_rej_n, meta_duplicates=meta_n - meta_rej_n - winners.count())
        meta_text = meta.select(
            "source", "line", clean_text(F.col("title")).alias("title"), clean_text(F.col("description")).alias("description"),
            clean_text(F.col("brand")).alias("brand"),
            F.filter(F.transform("categories", lambda c: clean_text(c)), lambda c: c.isNotNull()).alias("categories"),
            F.trim("image_url").alias("image_url"),
        )
        items_t = items.join(winners, "item_id", "left").join(meta_text, ["source", "line"], "left").drop("source", "line")
        row_counts["items_with_meta"] = items_t.filter(F.col("title").isNotNull() | F.col("description").isNotNull()).count()
    else:
        items_t = items
        for c, typ in (("title", "string"), ("description", "string"), ("brand", "string"), ("categories", "array<string>"), ("image_url", "string")):
            items_t = items_t.withColumn(c, F.lit(None).cast(typ))
    tables["items"] = items_t.select(*item_cols).orderBy("item_idx")

    users_t = users
    if frames.users is not None:
        side, side_n, side_rej_n = _collect_rejects(frames.users, reject_frames)
        row_counts.update(user_side_records=side_n, user_side_rejected=side_rej_n)
        side_cols = [c for c in side.columns if c not in ("source", "line", "raw", "reason", "user_id")]
        from pyspark.sql import Window

        w = Window.partitionBy("user_id").orderBy("line")
        sgood = side.filter(F.col("reason").isNull()).withColumn("_rn", F.row_number().over(w)).filter("_rn = 1")
        users_t = users.join(sgood.select("user_id", *side_cols), "user_id", "left")
    tables["users"] = users_t.select("user_idx", "user_id", *[c for c in users_t.columns if c not in ("user_idx", "user_id")]).orderBy("user_idx")
    rejects = reject_frames[0]
    for r in reject_frames[1:]:
        rejects = rejects.unionByName(r)
    # invalid UTF-8 bytes are kept visible (as U+FFFD) so the Parquet string column stays valid
    tables["rejects"] = rejects.withColumn("raw", F.expr("make_valid_utf8(raw)"))

    collapsed = good_n - dedup_n
    removed = dedup_n - kept_n
    row_counts.update(
        raw_records=raw_n, rejected=rejected, collapsed_duplicates=collapsed, removed_by_kcore=removed,
        interactions=kept_n, users=n_users, items=n_items,
        **{f"rejected_{k}": v for k, v in sorted(reject_counts.items())},
        **{f"split_{k}": v for k, v in sorted(split_counts.items())},
    )
    if raw_n != kept_n + rejected + collapsed + removed:  # cannot happen; guards future edits
        raise AssertionError(f"ETL counts do not reconcile: {row_counts}")
    for name, df in tables.items():
        df.write.mode("overwrite").parquet(artifacts.local_table_dir(dest, name))
    row_counts["reviews"] = tables["reviews"].count()
    row_counts["rejects"] = tables["rejects"].count()
    timings["write_s"] = round(time.time() - t, 3)
    timings["total_s"] = round(time.time() - t0, 3)
    log.debug("etl: %s", {k: row_counts[k] for k in ("raw_records", "rejected", "collapsed_duplicates", "removed_by_kcore", "interactions", "users", "items")})
    return {"row_counts": row_counts, "timings": timings, "extra": extra}


# a raw record is identified by its file, line and position in the line (a sequence line holds several)
RECORD_KEY = ("source", "line", "pos")
# what deduplication, k-core, ids and split need; text, summary and the raw line are joined back later
LIGHT_RECORD_COLUMNS = (*RECORD_KEY, "user_id", "item_id", "rating", "timestamp", "split_in")
HEAVY_RECORD_COLUMNS = ("text", "summary")


def join_text_back(kept, records):
    """``kept`` (any columns + RECORD_KEY) with the heavy text columns of ``records`` joined back by
    record key (null-safe on ``pos``, null for one-record lines): one join for the kept records only."""
    from pyspark.sql import functions as F

    # renamed copies: kept and records share a lineage, so same-named columns would be ambiguous
    heavy = records.filter(F.col("text").isNotNull() | F.col("summary").isNotNull()).select(
        *[F.col(c).alias(f"_h_{c}") for c in (*RECORD_KEY, *HEAVY_RECORD_COLUMNS)])
    cond = ((F.col("source") == F.col("_h_source")) & (F.col("line") == F.col("_h_line"))
            & F.col("pos").eqNullSafe(F.col("_h_pos")))
    joined = kept.join(heavy, cond, "left")
    return joined.select(*[c for c in kept.columns if c not in RECORD_KEY],
                         *[F.col(f"_h_{c}").alias(c) for c in HEAVY_RECORD_COLUMNS])


def _previous_ids(spark, uri: str | None) -> dict[str, Any]:
    """The earlier id dictionary (``etl.id_dictionary_from``) as Spark frames {"users", "items"}; {} when unset."""
    if not uri:
        return {}
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    out = {}
    for table, df in artifacts.load_id_dictionary(uri).items():
        idx, raw = artifacts.ID_COLUMNS[table]
        schema = StructType([StructField(raw, StringType(), False), StructField(idx, LongType(), False)])
        rows = list(zip(df[raw].astype(str).tolist(), df[idx].astype("int64").tolist()))
        out[table] = spark.createDataFrame(rows, schema)
        log.info("etl: id dictionary from %s: %d %s keep their index", uri, len(rows), table)
    return out


def collapse_meta(meta):
    """One meta row per item id: the first line wins (later duplicates are counted)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("item_id").orderBy("source", "line")
    return meta.withColumn("_rn", F.row_number().over(w)).filter(F.col("_rn") == 1).drop("_rn")


def run(ctx, out) -> dict[str, Any]:
    """Pipeline entry: Spark writes straight into a local store; for s3:// it writes to a local
    temp folder that is uploaded through the ArtifactStore (no hadoop-aws jars needed)."""
    cfg = ctx.cfg
    spark = get_spark(cfg.etl.master, cfg.etl.driver_memory, cfg.etl.shuffle_partitions)
    if out.store.is_s3:
        tmp = tempfile.mkdtemp(prefix="blast-etl-")
        try:
            result = run_etl(spark, cfg.dataset, cfg.etl, tmp)
            t = time.time()
            for name in TABLES:
                out.store.upload_dir(artifacts.local_table_dir(tmp, name), *out.parts, name)
            result["timings"]["upload_s"] = round(time.time() - t, 3)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.makedirs(out.path(), exist_ok=True)
        result = run_etl(spark, cfg.dataset, cfg.etl, out.path())
    return result


__all__ = ["run", "run_etl", "raw_input_hash", "raw_inputs", "FormatError", "TABLES"]
