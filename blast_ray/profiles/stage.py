"""The profiles stage: ``run(ctx, out)`` -> ``profiles/`` Parquet part files (one row per item and user).

Output columns (contract, ``blast_ray.profiles.artifacts.PROFILE_SCHEMA``): kind ('item'|'user'),
idx, text (the summarization), reasoning, engine, model, prompt_version, fallback, key; plus
attempts, error (last parse error) and raw (the last model answer, cut to 2,000 characters).

Data flow (no process holds a table that grows with the data): Spark builds the request rows from
the ETL tables (``profiles/requests.py``), anti-joins them with the keys of the prior committed
profiles and of the resumable cache, writes the reused rows as output part files and the rest as
request files; Ray Data generates those (``profiles/pipeline.py``), each worker writing its
finished batches into ``profiles/``. The driver keeps counts only.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as pads

from blast_ray.etl import artifacts as etl_artifacts
from blast_ray.etl.sparkio import get_spark
from blast_ray.profiles import artifacts, requests
from blast_ray.profiles.artifacts import PROFILE_SCHEMA, PROFILES
from blast_ray.profiles.fields import build_item_fields, build_user_fields
from blast_ray.profiles.pipeline import (
    GENERATED_IDX_KEPT,
    PassStats,
    cache_parts,
    engine_model,
    generate,
    load_reusable,
    reusable_files,
)
from blast_ray.profiles.prompts import profile_key
from blast_ray.store import latest_output

log = logging.getLogger("blast_ray.profiles")

TEMPLATE_WARNING = (
    "profiles.engine=template: NO LLM is used; profiles are deterministic texts built from the item/user "
    "fields. Set profiles.engine=vllm (GPU) or transformers/http for LLM profiles."
)


@dataclass
class Staging:
    """Where Spark writes before files are published: inside the store's cache area on a local
    store (same filesystem: publishing is a rename), a local temp folder for an s3 store."""

    store: Any
    dataset: str
    local: str

    @classmethod
    def open(cls, store, dataset: str) -> "Staging":
        if store.is_s3:
            return cls(store, dataset, tempfile.mkdtemp(prefix="blast-profiles-"))
        local = store.path(*artifacts.spark_staging_parts(dataset, uuid.uuid4().hex))
        os.makedirs(local, exist_ok=True)
        return cls(store, dataset, local)

    def dir(self, name: str) -> str:
        return os.path.join(self.local, name)

    def publish(self, local_dir: str, dest: tuple[str, ...], name_of) -> list[str]:
        """Move (local store) or upload (s3) each Parquet file Spark wrote in ``local_dir`` to
        ``dest``/``name_of(n)``; returns the store paths."""
        names = sorted(n for n in os.listdir(local_dir) if n.endswith(".parquet")) if os.path.isdir(local_dir) else []
        out = []
        for n, name in enumerate(names):
            src = os.path.join(local_dir, name)
            target = (*dest, name_of(n))
            if self.store.is_s3:
                self.store.write_file(src, *target)  # streamed: a part file grows with the data
            else:
                path = self.store.path(*target)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.replace(src, path)
            out.append(self.store.path(*target))
        return out

    def close(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)


def _reusable(spark, store, dataset: str, prior_out, staging: Staging):
    """(key, profile columns, _src) with one row per key (a cache row wins over a committed one: it
    is newer), or None when there is nothing to reuse."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    files = reusable_files(store, dataset, prior_out)
    frames = []
    for pri, src in enumerate(artifacts.REUSE_SOURCES):
        if not files[src]:
            continue
        local = requests.local_copies(store.fs, files[src], store.is_s3, staging.dir(f"reuse-{src}"))
        df = spark.read.schema(requests.PROFILE_DDL).parquet(*local)
        frames.append(df.withColumn("_src", F.lit(src)).withColumn("_pri", F.lit(pri)))
    if not frames:
        return None
    allr = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    w = Window.partitionBy("key").orderBy(F.col("_pri").desc())
    return allr.withColumn("_rn", F.row_number().over(w)).filter(F.col("_rn") == 1).drop("_rn", "_pri", "kind", "idx")


def _run_pass(kind: str, req, reusable, cfg, category: str, store, dataset: str, out, staging: Staging) -> PassStats:
    """Split ``req`` (Spark request rows of one kind) into reused rows (written as output parts by
    Spark) and rows to generate (written as request files, generated on Ray Data)."""
    from pyspark.sql import functions as F

    t0 = time.time()
    st = PassStats(kind=kind)
    req_dir = staging.dir(f"requests-{kind}")
    req.write.mode("overwrite").parquet(req_dir)
    spark = req.sparkSession
    req = spark.read.parquet(req_dir)
    if reusable is not None:
        joined = req.join(reusable, "key", "left")
        counts = {r["_src"]: int(r["count"]) for r in joined.groupBy("_src").count().collect()}
        reused = joined.filter(F.col("_src").isNotNull()).select(*artifacts.PROFILE_COLUMNS)
        reused_dir = staging.dir(f"reused-{kind}")
        reused.write.mode("overwrite").parquet(reused_dir)
        staging.publish(reused_dir, (*out.parts, PROFILES), lambda n: artifacts.reused_part_name(kind, n))
        todo = joined.filter(F.col("_src").isNull()).select(*req.columns)
    else:
        counts = {None: req.count()}
        todo = req
    st.reused_committed = counts.get("committed", 0)
    st.reused_cache = counts.get("cache", 0)
    st.generated = counts.get(None, 0)
    st.total = st.generated + st.reused_committed + st.reused_cache
    if st.generated:
        st.generated_idx = [int(r["idx"]) for r in todo.select("idx").orderBy("idx").limit(GENERATED_IDX_KEPT).collect()]
        todo_dir = staging.dir(f"todo-{kind}")
        todo.write.mode("overwrite").parquet(todo_dir)
        req_parts = artifacts.requests_parts(dataset, kind)
        paths = staging.publish(todo_dir, req_parts, artifacts.request_part_name)
        generate(kind, paths, st.generated, cfg, category, store, dataset, tuple(out.parts))
        store.delete_dir(*req_parts)
    st.seconds = round(time.time() - t0, 3)
    log.debug("profiles %s pass: %d rows, %d reused (%d committed, %d cache), %d generated, %.1fs",
              kind, st.total, st.reused_committed + st.reused_cache, st.reused_committed, st.reused_cache,
              st.generated, st.seconds)
    return st


def _item_profiles(spark, out, staging: Staging):
    """(idx, text) of the item rows this run has written, as a Spark frame (None: none written)."""
    fs, paths = artifacts.profiles_files(out)
    paths = [p for p in paths if os.path.basename(p).startswith("item-")]
    if not paths:
        return None
    local = requests.local_copies(fs, paths, out.store.is_s3, staging.dir("item-profiles"))
    return spark.read.schema(requests.PROFILE_DDL).parquet(*local).select("idx", "text")


def _count_output(out) -> tuple[dict[str, int], int]:
    """(rows per kind, fallbacks) of the written ``profiles/`` table, scanned batch by batch."""
    fs, paths = artifacts.profiles_files(out)
    rows = {"item": 0, "user": 0}
    fallbacks = 0
    if not paths:
        return rows, 0
    for batch in pads.dataset(paths, filesystem=fs, format="parquet", schema=PROFILE_SCHEMA).to_batches(
            columns=["kind", "fallback"]):
        for kind in rows:
            rows[kind] += int(pc.sum(pc.equal(batch.column(0), kind)).as_py() or 0)
        fallbacks += int(pc.sum(batch.column(1).cast("int64")).as_py() or 0)
    return rows, fallbacks


def _spark_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyspark") is not None


def _use_spark(cfg, etl) -> bool:
    """profiles.request_builder: 'spark' / 'driver' as said; 'auto' = Spark from
    ``spark_min_interactions`` ETL interactions on, when pyspark is installed (below that, a Spark
    session and its jobs cost more than the driver's pandas builders: 3x slower at 300k reviews)."""
    if cfg.request_builder == "driver":
        return False
    if cfg.request_builder == "spark":
        if not _spark_available():
            raise RuntimeError("profiles.request_builder=spark needs pyspark, which is not installed here; "
                               "install it or set profiles.request_builder to auto or driver")
        return True
    n = int(etl.manifest.get("row_counts", {}).get("interactions", 0))
    return _spark_available() and n >= cfg.spark_min_interactions


def _passes_spark(ctx, cfg, category: str, store, etl, out, prior_out, model: str) -> tuple[PassStats, PassStats, float]:
    t0 = time.time()
    e = ctx.cfg.etl
    spark = get_spark(e.master, e.driver_memory, e.shuffle_partitions)
    staging = Staging.open(store, ctx.dataset)
    try:
        tables = {n: requests.read_etl(spark, etl, n, staging.local)
                  for n in (etl_artifacts.ITEMS, etl_artifacts.USERS, etl_artifacts.INTERACTIONS, etl_artifacts.REVIEWS)}
        items, users, inter, reviews = (tables[etl_artifacts.ITEMS], tables[etl_artifacts.USERS],
                                        tables[etl_artifacts.INTERACTIONS], tables[etl_artifacts.REVIEWS])
        if items is None or users is None or inter is None:
            raise RuntimeError(f"ETL output {etl.uri()} lacks items/users/interactions tables")
        reusable = _reusable(spark, store, ctx.dataset, prior_out, staging)
        t_read = time.time() - t0
        item_req = requests.item_requests(spark, items, inter, reviews, cfg.max_reviews_per_item, cfg.prompt_version,
                                          model, cfg.sample_items)
        st_i = _run_pass("item", item_req, reusable, cfg, category, store, ctx.dataset, out, staging)
        user_req = requests.user_requests(spark, users, inter, items, reviews, _item_profiles(spark, out, staging),
                                          cfg.max_items_per_user, cfg.prompt_version, model, cfg.sample_users)
        st_u = _run_pass("user", user_req, reusable, cfg, category, store, ctx.dataset, out, staging)
    finally:
        staging.close()
    return st_i, st_u, t_read


def _run_pass_pandas(kind: str, rows: list[tuple[int, dict]], reusable: dict, cfg, category: str, store,
                     dataset: str, out, model: str) -> PassStats:
    """The small-data pass (no pyspark): the same split and outputs as ``_run_pass``, in the driver."""
    import json

    import pandas as pd
    import pyarrow as pa

    t0 = time.time()
    st = PassStats(kind=kind, total=len(rows))
    reused, todo = [], []
    for idx, f in rows:
        key = profile_key(kind, cfg.prompt_version, model, f)
        hit = reusable.get(key)
        if hit is None:
            todo.append({"kind": kind, "idx": idx, "key": key, "fields": json.dumps(f, sort_keys=True), "strict": False})
            continue
        reused.append({**{c: hit.get(c) for c in artifacts.PROFILE_COLUMNS}, "kind": kind, "idx": idx})
        if hit.get("_src") == "committed":
            st.reused_committed += 1
        else:
            st.reused_cache += 1
    if reused:
        store.write_table(artifacts.profiles_table(pd.DataFrame(reused, columns=artifacts.PROFILE_COLUMNS)),
                          *out.parts, PROFILES, artifacts.reused_part_name(kind, 0))
    st.generated = len(todo)
    if todo:
        st.generated_idx = sorted(r["idx"] for r in todo)[:GENERATED_IDX_KEPT]
        req_parts = artifacts.requests_parts(dataset, kind)
        store.write_table(pa.Table.from_pandas(pd.DataFrame(todo), preserve_index=False), *req_parts, artifacts.PART_FILE)
        generate(kind, [store.path(*req_parts, artifacts.PART_FILE)], len(todo), cfg, category, store, dataset,
                 tuple(out.parts))
        store.delete_dir(*req_parts)
    st.seconds = round(time.time() - t0, 3)
    return st


def _passes_pandas(ctx, cfg, category: str, store, etl, out, prior_out, model: str) -> tuple[PassStats, PassStats, float]:
    """The pandas builders in the driver (small data; also where pyspark is not installed, e.g. the
    CPU vLLM venv)."""
    if not _spark_available():
        log.warning("profiles: pyspark is not installed here; the requests are built in the driver with pandas "
                    "(small data only; install pyspark for the streaming Spark builder)")
    t0 = time.time()
    frames = {n: etl_artifacts.load_frame(etl, n, required=False)
              for n in (etl_artifacts.ITEMS, etl_artifacts.USERS, etl_artifacts.INTERACTIONS, etl_artifacts.REVIEWS)}
    items, users, inter, reviews = (frames[etl_artifacts.ITEMS], frames[etl_artifacts.USERS],
                                    frames[etl_artifacts.INTERACTIONS], frames[etl_artifacts.REVIEWS])
    if items is None or users is None or inter is None:
        raise RuntimeError(f"ETL output {etl.uri()} lacks items/users/interactions tables")
    prior = artifacts.load_profiles(prior_out) if prior_out is not None else None
    reusable = load_reusable(store, ctx.dataset, prior)
    t_read = time.time() - t0
    sample_i = items.sort_values("item_idx").head(cfg.sample_items) if cfg.sample_items is not None else items
    sample_u = users.sort_values("user_idx").head(cfg.sample_users) if cfg.sample_users is not None else users
    st_i = _run_pass_pandas("item", build_item_fields(sample_i, reviews, inter, cfg.max_reviews_per_item), reusable,
                            cfg, category, store, ctx.dataset, out, model)
    titles = {int(i): str(t) if isinstance(t, str) else "" for i, t in zip(items["item_idx"], items["title"])}
    written = artifacts.load_profiles(out)
    written = written[written["kind"] == "item"]
    profile_text = dict(zip(written["idx"].astype(int), written["text"]))
    st_u = _run_pass_pandas("user", build_user_fields(sample_u, inter, titles, profile_text, reviews, cfg.max_items_per_user),
                            reusable, cfg, category, store, ctx.dataset, out, model)
    return st_i, st_u, t_read


def run(ctx, out) -> dict:
    cfg = ctx.cfg.profiles
    category = ctx.cfg.dataset.category
    store = ctx.store
    etl = ctx.require("etl")
    if cfg.engine == "template":
        log.warning(TEMPLATE_WARNING)
    model = engine_model(cfg)
    prior_out = latest_output(store, ctx.dataset, "profiles")
    if prior_out is not None and prior_out.fingerprint == out.fingerprint:
        prior_out = None
    passes = _passes_spark if _use_spark(cfg, etl) else _passes_pandas
    st_i, st_u, t_read = passes(ctx, cfg, category, store, etl, out, prior_out, model)
    dropped = artifacts.drop_unfinished_parts(out)
    if dropped:
        log.warning("profiles: removed %d unfinished part file(s) of a killed batch write", dropped)
    rows, fb = _count_output(out)
    if rows["item"] != st_i.total or rows["user"] != st_u.total:
        raise RuntimeError(f"profiles output holds {rows} rows, expected item {st_i.total}, user {st_u.total}")
    if not rows["item"] and not rows["user"]:
        artifacts.write_profiles(out, PROFILE_SCHEMA.empty_table().to_pandas())
    # Everything is in the output now: the per-batch cache of this dataset has served its purpose.
    store.delete_dir(*cache_parts(ctx.dataset))

    n = rows["item"] + rows["user"]
    extra = {
        "engine": cfg.engine,
        "model": model,
        "prompt_version": cfg.prompt_version,
        "category": category,
        "fallback_rate": round(fb / n, 4) if n else 0.0,
        "fallbacks": fb,
        "generated": {"item": st_i.generated, "user": st_u.generated},
        "generated_idx": {"item": st_i.generated_idx[:GENERATED_IDX_KEPT], "user": st_u.generated_idx[:GENERATED_IDX_KEPT]},
        "reused_committed": {"item": st_i.reused_committed, "user": st_u.reused_committed},
        "reused_cache": {"item": st_i.reused_cache, "user": st_u.reused_cache},
        "reused_from": prior_out.fingerprint if prior_out is not None else None,
    }
    if cfg.engine == "template":
        extra["engine_warning"] = TEMPLATE_WARNING
    return {
        "row_counts": {"profiles": n, "item_profiles": rows["item"], "user_profiles": rows["user"]},
        "timings": {"read_s": round(t_read, 3), "items_s": st_i.seconds, "users_s": st_u.seconds},
        "extra": extra,
        "metrics": {"fallback_rate": extra["fallback_rate"]},
    }
