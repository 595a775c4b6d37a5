"""The request rows of the profiles stage, built by Spark joins and windows (no table in the driver).

One request row per profile to make: ``kind`` ('item'|'user'), ``idx``, ``key`` (``profile_key``),
``fields`` (``json.dumps(fields, sort_keys=True)``, the prompt's input) and ``strict`` (False: the
first attempt). The fields of one row are made by the pure functions of ``profiles/fields.py``
inside ``mapInPandas`` (one Arrow batch of one partition at a time), so they are byte-identical to
the pandas builders' (``fields.build_item_fields`` / ``build_user_fields``), hence the same keys as
profiles committed by earlier runs.

- item rows: the ``items`` row (title, description, brand, categories, MovieLens year) + up to
  ``max_reviews_per_item`` review lines of TRAIN interactions (left-semi join of ``reviews`` with
  the train rows of ``interactions``), the first by the fixed pseudo-random order ``mix_order(item,
  user)`` (a window ``row_number`` per item), empty lines dropped first.
- user rows: the ``about`` side columns + up to ``max_items_per_user`` train items, first by
  ``mix_order(user, item)``, each joined with its title (``items``), its item profile text (the
  item rows this stage has just written) and the user's own review line.

``_mix`` is uint64 arithmetic; Spark has no unsigned type and its ANSI mode fails on overflow, so
the order key is computed by a ``pandas_udf`` (numpy, per Arrow batch) as an int64 whose signed
order is the uint64 order.

ETL tables are read through ``blast_ray.etl.artifacts.table_files``. Spark here has no s3a: with an
``s3://`` store every input Parquet file is first copied to a local staging folder (one file at a
time, streamed; the limit is local disk, about the size of the ETL tables), and what Spark writes is
uploaded file by file.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pandas as pd

from blast_ray.etl import artifacts as etl_artifacts
from blast_ray.profiles.fields import USER_SIDE_COLUMNS, item_fields, mix_order, review_text, user_about, user_item

log = logging.getLogger("blast_ray.profiles")

REQUEST_DDL = "kind string, idx long, key string, fields string, strict boolean"
PROFILE_DDL = ("kind string, idx long, text string, reasoning string, engine string, model string, "
               "prompt_version string, fallback boolean, key string, attempts long, error string, raw string")


def local_copies(fs: Any, paths: list[str], is_s3: bool, dest: str) -> list[str]:
    """Paths Spark can read: ``paths`` themselves on a local store; else each file streamed
    (``copy_to_local``) from ``fs`` into the local folder ``dest``."""
    from blast_ray.store.artifact_store import copy_to_local

    if not is_s3:
        return list(paths)
    os.makedirs(dest, exist_ok=True)
    out = []
    for n, p in enumerate(paths):
        local = os.path.join(dest, f"{n:06d}-{os.path.basename(p)}")
        copy_to_local(fs, p, local)
        out.append(local)
    return out


def read_etl(spark, etl: Any, name: str, staging: str):
    """ETL table ``name`` of the committed output ``etl`` as a Spark DataFrame (None when absent)."""
    if not etl_artifacts.has_table(etl, name):
        return None
    fs, paths = etl_artifacts.table_files(etl, name)
    if not paths:
        return None
    return spark.read.parquet(*local_copies(fs, paths, etl.store.is_s3, os.path.join(staging, "etl", name)))


def _udfs():
    from pyspark.sql import functions as F

    @F.pandas_udf("long")
    def mix_udf(a: pd.Series, b: pd.Series) -> pd.Series:
        return pd.Series(mix_order(a.to_numpy("int64"), b.to_numpy("int64")))

    @F.pandas_udf("string")
    def review_udf(summary: pd.Series, text: pd.Series) -> pd.Series:
        return pd.Series([review_text(s, t) for s, t in zip(summary, text)], dtype=object)

    return mix_udf, review_udf


def _str(df, name: str):
    """Column ``name`` as a string column (null when ``df`` lacks it or it is all-null)."""
    from pyspark.sql import functions as F

    return (F.col(name) if name in df.columns else F.lit(None)).cast("string")


def _review_lines(reviews):
    """(user_idx, item_idx, rtext) of the non-empty review lines (``fields.review_text``)."""
    from pyspark.sql import functions as F

    _, review_udf = _udfs()
    lines = reviews.select(F.col("user_idx").cast("long").alias("user_idx"), F.col("item_idx").cast("long").alias("item_idx"),
                           review_udf(_str(reviews, "summary"), _str(reviews, "text")).alias("rtext"))
    return lines.filter(F.col("rtext") != "")


def _train_pairs(inter):
    from pyspark.sql import functions as F

    return inter.filter(F.col("split") == "train").select(F.col("user_idx").cast("long").alias("user_idx"),
                                                          F.col("item_idx").cast("long").alias("item_idx"))


def _item_rows(batches, has_year: bool, prompt_version: str, model: str):
    from blast_ray.profiles.prompts import profile_key
    import json

    for pdf in batches:
        idx, keys, fields = [], [], []
        for d in pdf.to_dict("records"):
            revs = d.pop("_reviews")
            f = item_fields(d, has_year, list(revs) if revs is not None else [])
            idx.append(int(d["item_idx"]))
            keys.append(profile_key("item", prompt_version, model, f))
            fields.append(json.dumps(f, sort_keys=True))
        yield pd.DataFrame({"kind": "item", "idx": pd.Series(idx, dtype="int64"), "key": pd.Series(keys, dtype=object),
                            "fields": pd.Series(fields, dtype=object), "strict": False})


def _user_rows(batches, side: list[str], prompt_version: str, model: str):
    from blast_ray.profiles.prompts import profile_key
    import json

    for pdf in batches:
        idx, keys, fields = [], [], []
        for d in pdf.to_dict("records"):
            its = d.pop("_items")
            items = [user_item(it["item_idx"], it["title"], it["profile"], it["review"]) for it in (its if its is not None else [])]
            f = {"about": user_about(d, side), "items": items}
            idx.append(int(d["user_idx"]))
            keys.append(profile_key("user", prompt_version, model, f))
            fields.append(json.dumps(f, sort_keys=True))
        yield pd.DataFrame({"kind": "user", "idx": pd.Series(idx, dtype="int64"), "key": pd.Series(keys, dtype=object),
                            "fields": pd.Series(fields, dtype=object), "strict": False})


def item_requests(spark, items, inter, reviews, max_reviews: int, prompt_version: str, model: str,
                  sample: int | None = None):
    """The item request rows (``REQUEST_DDL``) of ``items`` (first ``sample`` by idx when set)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    mix_udf, _ = _udfs()
    if sample is not None:
        items = items.orderBy("item_idx").limit(int(sample))
    has_year = "year" in items.columns
    base = items.select(F.col("item_idx").cast("long").alias("item_idx"), _str(items, "title").alias("title"),
                        _str(items, "description").alias("description"), _str(items, "brand").alias("brand"),
                        (F.col("categories").cast("array<string>") if "categories" in items.columns
                         else F.lit(None).cast("array<string>")).alias("categories"),
                        *([_str(items, "year").alias("year")] if has_year else []))
    if reviews is not None:
        lines = _review_lines(reviews.join(_train_pairs(inter), ["user_idx", "item_idx"], "left_semi"))
        lines = lines.withColumn("_o", mix_udf(F.col("item_idx"), F.col("user_idx")))
        w = Window.partitionBy("item_idx").orderBy("_o")
        top = lines.withColumn("_rn", F.row_number().over(w)).filter(F.col("_rn") <= int(max_reviews))
        per_item = top.groupBy("item_idx").agg(F.sort_array(F.collect_list(F.struct("_o", "rtext"))).alias("_r"))
        per_item = per_item.select("item_idx", F.transform("_r", lambda x: x["rtext"]).alias("_reviews"))
        base = base.join(per_item, "item_idx", "left")
    else:
        base = base.withColumn("_reviews", F.lit(None).cast("array<string>"))
    return base.mapInPandas(lambda it: _item_rows(it, has_year, prompt_version, model), REQUEST_DDL)


def user_requests(spark, users, inter, items, reviews, item_profiles, max_items: int, prompt_version: str,
                  model: str, sample: int | None = None):
    """The user request rows (``REQUEST_DDL``) of ``users`` (first ``sample`` by idx when set);
    ``item_profiles``: (idx, text) of this run's item profiles (None: no item profiles)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    mix_udf, _ = _udfs()
    if sample is not None:
        users = users.orderBy("user_idx").limit(int(sample))
    side = [c for c in USER_SIDE_COLUMNS if c in users.columns]
    base = users.select(F.col("user_idx").cast("long").alias("user_idx"), *[_str(users, c).alias(c) for c in side])
    train = _train_pairs(inter).withColumn("_o", mix_udf(F.col("user_idx"), F.col("item_idx")))
    w = Window.partitionBy("user_idx").orderBy("_o")
    top = train.withColumn("_rn", F.row_number().over(w)).filter(F.col("_rn") <= int(max_items)).drop("_rn")
    top = top.join(items.select(F.col("item_idx").cast("long").alias("item_idx"), _str(items, "title").alias("title")),
                   "item_idx", "left")
    if item_profiles is not None:
        prof = item_profiles.select(F.col("idx").alias("item_idx"), F.col("text").alias("profile"))
        top = top.join(prof, "item_idx", "left")
    else:
        top = top.withColumn("profile", F.lit(None).cast("string"))
    if reviews is not None:
        lines = _review_lines(reviews).dropDuplicates(["user_idx", "item_idx"])
        top = top.join(lines.withColumnRenamed("rtext", "review"), ["user_idx", "item_idx"], "left")
    else:
        top = top.withColumn("review", F.lit(None).cast("string"))
    per_user = top.groupBy("user_idx").agg(
        F.sort_array(F.collect_list(F.struct("_o", "item_idx", "title", "profile", "review"))).alias("_items"))
    base = base.join(per_user, "user_idx", "left")
    return base.mapInPandas(lambda it: _user_rows(it, side, prompt_version, model), REQUEST_DDL)
