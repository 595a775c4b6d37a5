"""Readers: one published raw format -> a frame of raw records plus optional item/user side frames.

Every reader returns a :class:`RawFrames` whose ``records`` frame has one row per raw interaction
record with the columns of :data:`RECORD_COLUMNS`; ``reason`` is null for a usable record and the
reject reason otherwise (so nothing is dropped silently: ``rejects/`` is ``reason IS NOT NULL``).
Side frames (``items``/``users``) carry ``source, line, raw, reason`` as well, keyed by the raw id.

All parsing uses Spark built-ins (``from_json`` with an all-string schema, ``split``,
``try_cast``); the one exception is the Amazon 2014 meta file whose lines are Python dict literals
(not JSON): those go through ``ast.literal_eval`` in a ``mapPartitions`` (meta files are
per-item, 10-100x smaller than the reviews, and there is no JVM parser for Python literals).
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Optional

from blast_ray.etl.sparkio import check_path, read_lines

RECORD_COLUMNS = (
    "source", "line", "raw", "user_id", "item_id", "rating", "timestamp", "text", "summary",
    "split_in", "pos", "reason",
)
ITEM_COLUMNS = ("source", "line", "raw", "item_id", "title", "description", "brand", "categories", "image_url", "reason")
# GroupLens u.item genre flags, in file order (u.genre)
ML_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# the files of a published LATTICE/MMRec split folder (role -> file name; ``read_lattice_split``)
LATTICE_FILES = {"train": "train.json", "valid": "val.json", "test": "test.json",
                 "user2id": "user2id.json", "item2id": "item2id.json"}
# an id is one printable token: no whitespace, quotes or JSON brackets (an object/array id is bad)
ID_PATTERN = r'^[^\s"{}\[\]]{1,256}$'


class FormatError(ValueError):
    """The inputs do not match the configured format (fails fast, one line)."""


@dataclass
class RawFrames:
    records: object  # DataFrame with RECORD_COLUMNS
    items: Optional[object] = None  # DataFrame with ITEM_COLUMNS
    users: Optional[object] = None  # DataFrame: source, line, raw, user_id, <side columns>, reason
    presplit: bool = False  # records carry a published split in split_in


def _F():
    from pyspark.sql import functions as F

    return F


def _blank(c):
    F = _F()
    return c.isNull() | (F.trim(c) == "")


def _id_reason(col, what: str):
    F = _F()
    return (
        F.when(_blank(col), F.lit(f"missing_{what}_id"))
        .when(~col.rlike(ID_PATTERN), F.lit(f"bad_{what}_id"))
    )


def _first(*conds):
    """coalesce of CASE expressions: the first failing check names the reason."""
    return _F().coalesce(*conds)


def _num_reasons(rating_s, ts_s, rating_range=(1.0, 5.0)):
    F = _F()
    rating = rating_s.try_cast("double")
    ts = ts_s.try_cast("double")
    r = [
        F.when(~_blank(rating_s) & (rating.isNull() | F.isnan(rating)), F.lit("bad_rating")),
        F.when(rating.isNotNull() & ((rating < rating_range[0]) | (rating > rating_range[1])), F.lit("rating_out_of_range")),
        F.when(~_blank(ts_s) & (ts.isNull() | F.isnan(ts) | (ts < 0) | (ts != F.floor(ts))), F.lit("bad_timestamp")),
    ]
    return rating, ts.try_cast("long"), r


def _base_line_reasons(raw):
    F = _F()
    return [
        F.when(~F.expr("is_valid_utf8(raw)"), F.lit("bad_encoding")),
        F.when(raw.rlike(r"^\s*$"), F.lit("empty_line")),  # trim() strips spaces only, not tabs
    ]


def _records(df, **cols):
    F = _F()
    out = []
    for c in RECORD_COLUMNS:
        v = cols.get(c, df[c] if c in df.columns else None)
        if v is None:
            v = F.lit(None)
        out.append(v.alias(c))
    return df.select(*out).select(
        "source", F.col("line").cast("long").alias("line"), "raw", F.col("user_id").cast("string").alias("user_id"),
        F.col("item_id").cast("string").alias("item_id"), F.col("rating").cast("double").alias("rating"),
        F.col("timestamp").cast("long").alias("timestamp"), F.col("text").cast("string").alias("text"),
        F.col("summary").cast("string").alias("summary"), F.col("split_in").cast("string").alias("split_in"),
        F.col("pos").cast("long").alias("pos"), F.col("reason").cast("string").alias("reason"),
    )


# ---------------------------------------------------------------------------------------------
# JSON lines (Amazon 2014 / 2018 / 2023 reviews and 2018 / 2023 meta)
# ---------------------------------------------------------------------------------------------
def _parse_json_lines(lines, keys):
    """Parse each line as a JSON object with every key as a string (numbers keep their text)."""
    F = _F()
    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType([StructField(k, StringType()) for k in keys] + [StructField("_corrupt", StringType())])
    parsed = F.from_json(F.col("raw"), schema, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt", "allowSingleQuotes": "false"})
    df = lines.withColumn("j", parsed)
    json_reasons = _base_line_reasons(F.col("raw")) + [
        F.when(~F.col("raw").rlike(r"^\s*\{"), F.lit("not_a_json_object")),
        F.when(F.col("j").isNull() | F.col("j._corrupt").isNotNull() | ~F.col("raw").rlike(r"\}\s*$"), F.lit("malformed_json")),
    ]
    return df, json_reasons


def _json_reviews(spark, path, role, user_key, item_key, rating_key, ts_key, text_key, summary_key, ts_div=1):
    F = _F()
    lines = read_lines(spark, path, role)
    df, reasons = _parse_json_lines(lines, [user_key, item_key, rating_key, ts_key, text_key, summary_key])
    j = lambda k: F.col("j").getField(k)  # noqa: E731
    rating, ts, num_reasons = _num_reasons(j(rating_key), j(ts_key))
    reason = _first(*reasons, _id_reason(j(user_key), "user"), _id_reason(j(item_key), "item"), *num_reasons)
    return _records(
        df, user_id=F.trim(j(user_key)), item_id=F.trim(j(item_key)), rating=rating,
        timestamp=(ts / F.lit(ts_div)).cast("long") if ts_div != 1 else ts,
        text=j(text_key), summary=j(summary_key), reason=reason,
    )


def _str_or_list(c, sep=" "):
    """A JSON field that is a string or a list of strings -> one string (list joined)."""
    F = _F()
    arr = F.from_json(c, "array<string>")
    return F.when(F.ltrim(c).startswith("["), F.concat_ws(sep, arr)).otherwise(c)


def _meta_from_json(lines, id_key, title_key, desc_key, brand_key, cat_key, cat_kind, img_key, img_kind):
    F = _F()
    df, reasons = _parse_json_lines(lines, [id_key, title_key, desc_key, brand_key, cat_key, img_key])
    j = lambda k: F.col("j").getField(k)  # noqa: E731
    if cat_kind == "list":
        cats = F.from_json(j(cat_key), "array<string>")
    elif cat_kind == "list_of_lists":  # 2014: [["Baby", "Strollers"], ...] -> distinct flat list
        cats = F.array_distinct(F.flatten(F.from_json(j(cat_key), "array<array<string>>")))
    else:
        cats = F.lit(None).cast("array<string>")
    if img_kind == "list":
        img = F.get(F.from_json(j(img_key), "array<string>"), 0)
    elif img_kind == "images2023":  # [{"thumb":..., "large":..., "hi_res":...}, ...]
        first = F.get(F.from_json(j(img_key), "array<map<string,string>>"), 0)
        img = F.coalesce(F.try_element_at(first, F.lit("large")), F.try_element_at(first, F.lit("hi_res")), F.try_element_at(first, F.lit("thumb")))
    else:
        img = j(img_key)
    reason = _first(*reasons, _id_reason(j(id_key), "item"))
    return df.select(
        "source", "line", "raw", F.trim(j(id_key)).alias("item_id"), j(title_key).alias("title"),
        _str_or_list(j(desc_key)).alias("description"), j(brand_key).alias("brand"),
        cats.alias("categories"), img.alias("image_url"), reason.alias("reason"),
    )


def _python_literal_to_json(rows):
    """mapPartitions body for Amazon 2014 meta: Python dict literal -> JSON text (or '' + reason)."""
    for r in rows:
        raw = r["raw"]
        try:
            obj = ast.literal_eval(raw) if raw and raw.strip() else None
            if obj is not None and not isinstance(obj, dict):
                yield (r["source"], r["line"], raw, None, "not_a_dict_literal")
                continue
            yield (r["source"], r["line"], raw, json.dumps(obj) if obj is not None else None, None)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            yield (r["source"], r["line"], raw, None, "malformed_python_literal")


def read_amazon2014_meta(spark, path):
    F = _F()
    lines = read_lines(spark, path, "meta")
    conv = spark.createDataFrame(
        lines.rdd.mapPartitions(_python_literal_to_json), "source string, line long, raw string, json string, pre string"
    )
    meta = _meta_from_json(
        conv.select("source", "line", F.coalesce("json", F.lit("")).alias("raw"), "pre", F.col("raw").alias("orig")),
        "asin", "title", "description", "brand", "categories", "list_of_lists", "imUrl", "scalar",
    )
    # keep the original literal text as raw and the literal parser's reason first
    return meta.join(conv.select("source", "line", F.col("raw").alias("orig"), "pre"), ["source", "line"]).select(
        "source", "line", F.col("orig").alias("raw"), "item_id", "title", "description", "brand", "categories",
        "image_url", F.coalesce(F.when(_blank(F.col("orig")), F.lit("empty_line")), "pre", "reason").alias("reason"),
    )


def read_amazon(spark, paths: dict, version: str) -> RawFrames:
    if "reviews" not in paths:
        raise FormatError(f"format amazon{version} needs dataset.paths.reviews (and optionally meta)")
    if version == "2023":
        rec = _json_reviews(spark, paths["reviews"], "reviews", "user_id", "parent_asin", "rating", "timestamp", "text", "title", ts_div=1000)
    else:
        rec = _json_reviews(spark, paths["reviews"], "reviews", "reviewerID", "asin", "overall", "unixReviewTime", "reviewText", "summary")
    items = None
    if paths.get("meta"):
        if version == "2014":
            items = read_amazon2014_meta(spark, paths["meta"])
        elif version == "2018":
            items = _meta_from_json(read_lines(spark, paths["meta"], "meta"), "asin", "title", "description", "brand", "category", "list", "imageURLHighRes", "list")
        else:
            items = _meta_from_json(read_lines(spark, paths["meta"], "meta"), "parent_asin", "title", "description", "store", "categories", "list", "images", "images2023")
    return RawFrames(rec, items)


# ---------------------------------------------------------------------------------------------
# delimited text formats (MovieLens, MMRec)
# ---------------------------------------------------------------------------------------------
def _delimited(lines, sep, n_fields, header: bool):
    """Split lines; header line (line 1) removed when ``header``; wrong width -> reason."""
    F = _F()
    if header:
        lines = lines.filter(F.col("line") > 1)
    df = lines.withColumn("f", F.split(F.col("raw"), sep))
    reasons = _base_line_reasons(F.col("raw")) + [F.when(F.size("f") != n_fields, F.lit("wrong_field_count"))]
    return df, reasons


def _header_check(spark, path, role, expected_first: str):
    """Atomic files start with a typed header; check the first token so a wrong file fails fast."""
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", "replace")
    if not first.startswith(expected_first):
        raise FormatError(f"dataset.paths.{role}: {path} does not start with the header '{expected_first}...'")


def _inter_records(spark, path, role, sep, header, order=("user", "item", "rating", "ts"), n_fields=4, label_idx=None):
    F = _F()
    df, reasons = _delimited(read_lines(spark, path, role), sep, n_fields, header)
    f = lambda i: F.trim(F.get(F.col("f"), i))  # noqa: E731
    u, it, r, t = (f(order.index(k)) for k in ("user", "item", "rating", "ts"))
    rating, ts, num_reasons = _num_reasons(r, t)
    split_in = None
    if label_idx is not None:  # MMRec x_label: 0 train, 1 valid, 2 test
        lab = f(label_idx)
        split_in = F.when(lab == "0", "train").when(lab == "1", "valid").when(lab == "2", "test")
        reasons.append(F.when(split_in.isNull(), F.lit("bad_split_label")))
    reason = _first(*reasons, _id_reason(u, "user"), _id_reason(it, "item"), *num_reasons)
    return _records(df, user_id=u, item_id=it, rating=rating, timestamp=ts, split_in=split_in, reason=reason)


def read_movielens_atomic(spark, paths: dict) -> RawFrames:
    F = _F()
    if "inter" not in paths:
        raise FormatError("format movielens_atomic needs dataset.paths.inter (and optionally item, user)")
    check_path(paths["inter"], "inter")
    _header_check(spark, paths["inter"], "inter", "user_id:token")
    rec = _inter_records(spark, paths["inter"], "inter", "\t", True)
    items = users = None
    if paths.get("item"):
        check_path(paths["item"], "item")
        _header_check(spark, paths["item"], "item", "item_id:token")
        df, reasons = _delimited(read_lines(spark, paths["item"], "item"), "\t", 4, True)
        f = lambda i: F.trim(F.get(F.col("f"), i))  # noqa: E731
        year = F.when(f(2).rlike(r"^\d{4}$"), f(2))
        title = F.when(year.isNotNull(), F.concat(f(1), F.lit(" ("), year, F.lit(")"))).otherwise(f(1))
        cats = F.when(~_blank(f(3)), F.split(f(3), " "))
        items = df.select(
            "source", "line", "raw", f(0).alias("item_id"), title.alias("title"), F.lit(None).cast("string").alias("description"),
            F.lit(None).cast("string").alias("brand"), cats.alias("categories"), F.lit(None).cast("string").alias("image_url"),
            _first(*reasons, _id_reason(f(0), "item")).alias("reason"),
        )
    if paths.get("user"):
        check_path(paths["user"], "user")
        _header_check(spark, paths["user"], "user", "user_id:token")
        users = _ml_users(read_lines(spark, paths["user"], "user"), "\t", True)
    return RawFrames(rec, items, users)


def _ml_users(lines, sep, header):
    F = _F()
    df, reasons = _delimited(lines, sep, 5, header)
    f = lambda i: F.trim(F.get(F.col("f"), i))  # noqa: E731
    return df.select(
        "source", "line", "raw", f(0).alias("user_id"), f(1).try_cast("long").alias("age"), f(2).alias("gender"),
        f(3).alias("occupation"), f(4).alias("zip_code"), _first(*reasons, _id_reason(f(0), "user")).alias("reason"),
    )


def read_movielens_raw(spark, paths: dict) -> RawFrames:
    F = _F()
    if "ratings" not in paths:
        raise FormatError("format movielens_raw needs dataset.paths.ratings (u.data; optionally items u.item, users u.user)")
    rec = _inter_records(spark, paths["ratings"], "ratings", "\t", False)
    items = users = None
    if paths.get("items"):
        # u.item is ISO-8859-1: movie_id | title (year) | release date | video date | url | 19 genre flags
        df, reasons = _delimited(read_lines(spark, paths["items"], "items", encoding="ISO-8859-1"), r"\|", 24, False)
        f = lambda i: F.trim(F.get(F.col("f"), i))  # noqa: E731
        genres = F.filter(F.array(*[F.when(f(5 + i) == "1", F.lit(g)) for i, g in enumerate(ML_GENRES)]), lambda x: x.isNotNull())
        reasons = [r for r in reasons[1:]]  # decoded as latin-1: every byte is valid
        items = df.select(
            "source", "line", "raw", f(0).alias("item_id"), f(1).alias("title"), F.lit(None).cast("string").alias("description"),
            F.lit(None).cast("string").alias("brand"), genres.alias("categories"), F.lit(None).cast("string").alias("image_url"),
            _first(*reasons, _id_reason(f(0), "item")).alias("reason"),
        )
    if paths.get("users"):
        users = _ml_users(read_lines(spark, paths["users"], "users"), r"\|", False)
    return RawFrames(rec, items, users)


def read_mmrec_inter(spark, paths: dict) -> RawFrames:
    if "inter" not in paths:
        raise FormatError("format mmrec_inter needs dataset.paths.inter (userID itemID rating timestamp x_label)")
    check_path(paths["inter"], "inter")
    _header_check(spark, paths["inter"], "inter", "userID")
    rec = _inter_records(spark, paths["inter"], "inter", "\t", True, n_fields=5, label_idx=4)
    return RawFrames(rec, presplit=True)


# ---------------------------------------------------------------------------------------------
# sequence formats: one record per (user, item) token
# ---------------------------------------------------------------------------------------------
def _explode_sequence(df, user, items_arr, line_reasons, split_of_pos=None):
    """Line-level problems give one reject record per line; good lines explode into tokens."""
    F = _F()
    line_reason = _first(*line_reasons, _id_reason(user, "user"), F.when(F.size(items_arr) < 1, F.lit("no_items")))
    df = df.withColumn("_u", user).withColumn("_items", items_arr).withColumn("_lr", line_reason)
    bad = df.filter(F.col("_lr").isNotNull())
    good = df.filter(F.col("_lr").isNull()).select("*", F.posexplode("_items").alias("_pos", "_item"))
    n = F.size("_items")
    split_in = split_of_pos(F.col("_pos"), n) if split_of_pos else None
    good_rec = _records(
        good, user_id=F.col("_u"), item_id=F.trim(F.col("_item")), pos=F.col("_pos"), split_in=split_in,
        reason=_id_reason(F.trim(F.col("_item")), "item"),
    )
    bad_rec = _records(bad, user_id=F.col("_u"), reason=F.col("_lr"))
    return good_rec.unionByName(bad_rec)


def read_seq_txt(spark, paths: dict) -> RawFrames:
    F = _F()
    if "sequences" not in paths:
        raise FormatError("format seq_txt needs dataset.paths.sequences (one line per user: 'user item item ...')")
    lines = read_lines(spark, paths["sequences"], "sequences")
    toks = F.split(F.trim(F.col("raw")), r"\s+")
    df = lines.withColumn("_t", toks)
    return RawFrames(_explode_sequence(df, F.get(F.col("_t"), 0), F.slice("_t", 2, 1 << 30), _base_line_reasons(F.col("raw"))))


def _index_map(spark, path, role, key_name):
    """RecBole *.item2index / *.user2index: 'raw_id<TAB>index' -> (index, raw id)."""
    F = _F()
    df = read_lines(spark, path, role).withColumn("f", F.split("raw", "\t"))
    return df.filter(F.size("f") == 2).select(F.trim(F.get(F.col("f"), 1)).alias("_idx"), F.trim(F.get(F.col("f"), 0)).alias(key_name))


def read_recbole_seq(spark, paths: dict) -> RawFrames:
    """Sequence files of RecBole/UniSRec: the test file holds each user's whole (time-ordered)
    history as ``item_id_list`` + target ``item_id``; the published leave-one-out split is
    last = test, second last = valid, the rest train (the .train/.valid files are its prefixes)."""
    F = _F()
    if "test" not in paths:
        raise FormatError("format recbole_seq needs dataset.paths.test (X.test.inter: the full sequences); text optional")
    check_path(paths["test"], "test")
    _header_check(spark, paths["test"], "test", "user_id:token")
    df, reasons = _delimited(read_lines(spark, paths["test"], "test"), "\t", 3, True)
    seq = F.concat(F.split(F.trim(F.get(F.col("f"), 1)), " "), F.array(F.trim(F.get(F.col("f"), 2))))
    seq = F.filter(seq, lambda x: x != "")

    def split_of_pos(pos, n):
        return F.when(pos == n - 1, "test").when(pos == n - 2, "valid").otherwise("train")

    rec = _explode_sequence(df, F.trim(F.get(F.col("f"), 0)), seq, reasons, split_of_pos)
    if paths.get("item2index"):
        m = _index_map(spark, paths["item2index"], "item2index", "_asin")
        rec = rec.join(F.broadcast(m), rec["item_id"] == m["_idx"], "left").withColumn(
            "item_id", F.when(F.col("reason").isNull(), F.coalesce("_asin", "item_id")).otherwise(F.col("item_id"))
        ).drop("_idx", "_asin")
    if paths.get("user2index"):
        m = _index_map(spark, paths["user2index"], "user2index", "_uid")
        rec = rec.join(F.broadcast(m), rec["user_id"] == m["_idx"], "left").withColumn(
            "user_id", F.coalesce("_uid", "user_id")
        ).drop("_idx", "_uid")
    items = None
    if paths.get("text"):
        # "<title>. <category path>. <brand>. " (UniSRec text): split from the right
        tdf, treasons = _delimited(read_lines(spark, paths["text"], "text"), "\t", 2, True)
        text = F.regexp_replace(F.trim(F.get(F.col("f"), 1)), r"\.$", "")
        parts = F.split(text, r"\. ")
        n = F.size(parts)
        title = F.when(n >= 3, F.array_join(F.slice(parts, 1, n - 2), ". ")).otherwise(F.get(parts, 0))
        items = tdf.select(
            "source", "line", "raw", F.trim(F.get(F.col("f"), 0)).alias("item_id"), title.alias("title"),
            F.when(n >= 3, F.try_element_at(parts, F.lit(-2))).alias("description"), F.when(n >= 2, F.try_element_at(parts, F.lit(-1))).alias("brand"),
            F.lit(None).cast("array<string>").alias("categories"), F.lit(None).cast("string").alias("image_url"),
            _first(*treasons, _id_reason(F.trim(F.get(F.col("f"), 0)), "item")).alias("reason"),
        )
    return RawFrames(rec, items, presplit=True)


def read_presplit_json(spark, paths: dict) -> RawFrames:
    """train.json / val.json / test.json: one JSON object user -> [items] per file (LATTICE/MMRec).

    Each file is a single JSON document, read whole (these published splits are a few MB)."""
    F = _F()
    missing = [r for r in ("train", "valid", "test") if r not in paths]
    if missing:
        raise FormatError(f"format presplit_json needs dataset.paths.{', '.join(missing)} (train/valid/test .json)")
    frames = []
    for role, split in (("train", "train"), ("valid", "valid"), ("test", "test")):
        path = check_path(paths[role], role)
        doc = spark.read.option("wholetext", "true").text(path)
        parsed = doc.select(F.from_json("value", "map<string,array<string>>").alias("m"))
        df = parsed.select(F.explode("m").alias("_u", "_items")).select(
            F.lit(path.rsplit("/", 1)[-1]).alias("source"), F.lit(None).cast("long").alias("line"),
            F.concat(F.col("_u"), F.lit(": "), F.to_json("_items")).alias("raw"), "_u", "_items",
        )
        df = df.withColumn("_items", F.coalesce("_items", F.array()))
        frames.append(_explode_sequence(df, F.col("_u"), F.col("_items"), [], lambda pos, n, s=split: F.lit(s)))
        if parsed.filter(F.col("m").isNull()).limit(1).count():
            raise FormatError(f"dataset.paths.{role}: {path} is not a JSON object of user -> [item ids]")
    rec = frames[0].unionByName(frames[1]).unionByName(frames[2])
    for role, col, name in (("item2id", "item_id", "_raw_item"), ("user2id", "user_id", "_raw_user")):
        if paths.get(role):  # {"ASIN": 0, ...}: map the dense ids back to the published raw ids
            doc = spark.read.option("wholetext", "true").text(check_path(paths[role], role))
            m = doc.select(F.explode(F.from_json("value", "map<string,string>")).alias(name, "_k"))
            rec = rec.join(F.broadcast(m), rec[col] == m["_k"], "left").withColumn(col, F.coalesce(name, col)).drop("_k", name)
    return RawFrames(rec, presplit=True)


def read_lattice_split(folder, max_users: int | None = None):
    """Read a LATTICE/MMRec split folder straight into ``InteractionData``, without Spark or the ETL.

    The folder holds ``{train,val,test}.json`` (user id -> item id list, ids already dense) and
    ``user2id.json`` / ``item2id.json`` (their lengths give n_users / n_items): the same files
    ``presplit_json`` reads through Spark. ``max_users`` keeps the first users (a real-data slice for
    fast tests and benchmarks); item ids are kept, so n_items stays that of the dataset.
    Example: ``read_lattice_split("../shared/data/amazon-baby-5core", max_users=500)``.
    """
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from blast_ray.data.interactions import InteractionData

    folder = Path(folder)
    n_users = len(json.loads((folder / LATTICE_FILES["user2id"]).read_text()))
    n_items = len(json.loads((folder / LATTICE_FILES["item2id"]).read_text()))
    frames = []
    for split in ("train", "valid", "test"):
        d = json.loads((folder / LATTICE_FILES[split]).read_text())
        u = np.fromiter((int(k) for k, v in d.items() for _ in v), dtype=np.int64)
        i = np.fromiter((int(x) for v in d.values() for x in v), dtype=np.int64)
        frames.append(pd.DataFrame({"user_idx": u, "item_idx": i, "split": split}))
    df = pd.concat(frames, ignore_index=True)
    if max_users is not None:
        df = df[df["user_idx"] < max_users]
        n_users = max_users
    return InteractionData.from_frame(df, n_users, n_items)


READERS = {
    "amazon2014": lambda s, p: read_amazon(s, p, "2014"),
    "amazon2018": lambda s, p: read_amazon(s, p, "2018"),
    "amazon2023": lambda s, p: read_amazon(s, p, "2023"),
    "movielens_atomic": read_movielens_atomic,
    "movielens_raw": read_movielens_raw,
    "mmrec_inter": read_mmrec_inter,
    "recbole_seq": read_recbole_seq,
    "seq_txt": read_seq_txt,
    "presplit_json": read_presplit_json,
}


def read_raw(spark, fmt: str, paths: dict) -> RawFrames:
    """Dispatch on ``dataset.format``; an unknown format fails fast."""
    if fmt not in READERS:
        raise FormatError(f"dataset.format {fmt!r} is not recognised; formats are {', '.join(READERS)}")
    return READERS[fmt](spark, paths)
