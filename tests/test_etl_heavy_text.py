"""ETL at scale (issue 11 item 6): heavy text joined back once, gzip input repartitioned, streaming
inbox combine. Real raw Amazon 2018 samples; expected values from plain pandas/json over the raw files."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from blast_ray.config import DatasetConfig, EtlConfig
from blast_ray.etl.stage import run_etl


@pytest.fixture(scope="module")
def spark():
    from blast_ray.etl.sparkio import get_spark

    yield get_spark("local[2]", "2g", shuffle_partitions=2)


def _read(dest, name) -> pd.DataFrame:
    return pq.read_table(Path(dest) / name).to_pandas()


def _raw_lines(path: Path) -> pd.DataFrame:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [dict(json.loads(x), _line=n) for n, x in enumerate(f, start=1)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def beauty_on_magazine(dataset, tmp_path_factory):
    """All_Beauty_5 reviews whose asins are mapped (sorted onto sorted) to the asins of the Magazine
    meta file, so that every kept item has a real meta record (with duplicates and HTML) to join back."""
    src = dataset("amazon-raw-2018")
    meta_asins = sorted(_raw_lines(src / "meta_Magazine_Subscriptions.json.gz")["asin"].unique())
    d = tmp_path_factory.mktemp("beauty-mag")
    with gzip.open(src / "All_Beauty_5.json.gz", "rt", encoding="utf-8") as f:
        recs = [json.loads(x) for x in f]
    asins = sorted({r["asin"] for r in recs})
    assert len(asins) <= len(meta_asins)
    to_meta = dict(zip(asins, meta_asins))
    with gzip.open(d / "reviews.json.gz", "wt", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps({**r, "asin": to_meta[r["asin"]]}) + "\n")
    return {"reviews": str(d / "reviews.json.gz"), "meta": str(src / "meta_Magazine_Subscriptions.json.gz")}


def test_review_text_joined_back_is_the_winning_raw_record(spark, beauty_on_magazine, tmp_path):
    ds = DatasetConfig("beauty-mag", "amazon2018", beauty_on_magazine)
    res = run_etl(spark, ds, EtlConfig(kcore=3), str(tmp_path))
    rc = res["row_counts"]
    raw = _raw_lines(Path(beauty_on_magazine["reviews"]))
    # the winner of a (user, item) pair: the latest review time, then the later line
    win = raw.sort_values(["unixReviewTime", "_line"]).drop_duplicates(["reviewerID", "asin"], keep="last")
    users = _read(tmp_path, "users").set_index("user_idx")["user_id"]
    items = _read(tmp_path, "items").set_index("item_idx")
    reviews = _read(tmp_path, "reviews")
    inter = _read(tmp_path, "interactions")
    assert len(inter) == rc["interactions"] and len(reviews) == rc["reviews"] > 0
    reviews["u"] = users.loc[reviews.user_idx].to_numpy()
    reviews["i"] = items["item_id"].loc[reviews.item_idx].to_numpy()
    got = reviews.merge(win, left_on=["u", "i"], right_on=["reviewerID", "asin"], how="left", validate="1:1")
    assert got["_line"].notna().all()
    norm = lambda s: s.where(s.notna(), None).tolist()  # noqa: E731
    assert norm(got["text"]) == norm(got["reviewText"]) and norm(got["summary_x"]) == norm(got["summary_y"])
    # every kept pair with text has its review row, and none without
    kept = inter.assign(u=users.loc[inter.user_idx].to_numpy(), i=items["item_id"].loc[inter.item_idx].to_numpy())
    kept = kept.merge(win, left_on=["u", "i"], right_on=["reviewerID", "asin"], how="left", validate="1:1")
    assert (kept.reviewText.notna() | kept.summary.notna()).sum() == len(reviews)
    # meta: every kept item got the first meta line of its asin (title through clean_text: check non-HTML ones)
    meta = _raw_lines(Path(beauty_on_magazine["meta"])).drop_duplicates("asin", keep="first").set_index("asin")
    assert rc["items_with_meta"] > 0 and rc["meta_duplicates"] == rc["meta_records"] - meta.shape[0]
    plain = [(t, meta.at[i, "title"]) for i, t in zip(items.item_id, items.title)
             if isinstance(meta.at[i, "title"], str) and "<" not in meta.at[i, "title"] and "&" not in meta.at[i, "title"]
             and meta.at[i, "title"].strip() == " ".join(meta.at[i, "title"].split())]
    assert len(plain) >= 5 and all(t == m.strip() for t, m in plain)  # 5 of the 62 kept items here
    assert items.title.notna().sum() > 0 and all(t is None or "<" not in t for t in items.title)
    brands = [(b, meta.at[i, "brand"]) for i, b in zip(items.item_id, items.brand)
              if isinstance(meta.at[i, "brand"], str) and meta.at[i, "brand"].strip()
              and not any(ch in meta.at[i, "brand"] for ch in "<&")]
    assert brands and all(b == " ".join(m.split()) for b, m in brands)


def test_gzip_lines_numbered_in_file_order_then_spread(spark, dataset):
    from pyspark.sql import functions as F

    from blast_ray.etl.sparkio import gzip_partitions, read_lines

    path = dataset("amazon-raw-2018") / "AMAZON_FASHION_5.json.gz"
    df = read_lines(spark, str(path), "reviews")
    assert df.rdd.getNumPartitions() == gzip_partitions(spark, str(path)) >= 2
    _assert_lines_in_file_order(df, path)
    assert df.withColumn("_p", F.spark_partition_id()).groupBy("_p").count().count() >= 2


def test_gzip_partitions_follow_the_compressed_size(spark, dataset, monkeypatch):
    """A bigger .gz gets more partitions (a task's share stays bounded, not 1/cores of the dump),
    and the lines keep their file-order numbers whatever the partition count."""
    from blast_ray.etl import sparkio

    path = dataset("amazon-raw-2018") / "AMAZON_FASHION_5.json.gz"
    floor = max(2, spark.sparkContext.defaultParallelism)
    assert sparkio.gzip_partitions(spark, str(path)) == floor  # under 32 MiB: the parallelism
    size = path.stat().st_size
    monkeypatch.setattr(sparkio, "GZIP_PARTITION_BYTES", size // 6)
    assert sparkio.gzip_partitions(spark, str(path)) == max(floor, -(-size // (size // 6))) >= 6
    df = sparkio.read_lines(spark, str(path), "reviews")
    assert df.rdd.getNumPartitions() >= 6
    _assert_lines_in_file_order(df, path)


def _assert_lines_in_file_order(df, path):
    """``df``'s (line, raw) rows are the .gz file's lines, numbered 1.. in file order."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        expect = [x.rstrip("\n") for x in f]
    got = df.orderBy("line").select("line", "raw").collect()
    assert [r["line"] for r in got] == list(range(1, len(expect) + 1))
    assert [r["raw"] for r in got] == expect


def test_nightly_combine_streams(dataset, tmp_path):
    from blast_ray.jobs.nightly import combine

    src = dataset("amazon-raw-2018")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.json.gz").write_bytes((src / "All_Beauty_5.json.gz").read_bytes())
    with gzip.open(src / "AMAZON_FASHION_5.json.gz", "rb") as f:
        fashion = f.read()
    (inbox / "b.json").write_bytes(fashion.rstrip(b"\n"))  # last line without its newline
    with gzip.open(src / "All_Beauty_5.json.gz", "rb") as f:
        beauty = f.read()
    tracemalloc.start()
    target = combine(str(inbox), ["a.json.gz", "b.json"], str(tmp_path / "out" / "reviews.json"), chunk_bytes=64 << 10)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    data = Path(target).read_bytes()
    assert data == beauty + (b"" if beauty.endswith(b"\n") else b"\n") + fashion.rstrip(b"\n") + b"\n"
    assert peak < len(beauty) / 4 and peak < 1 << 20, peak  # chunks, never a whole file
