"""Spark ETL on real data (Amazon 2018 samples, MovieLens-100k, Baby pre-split) and hand-made
fixtures of the 2014/2023 formats and of broken lines. Expected counts come from independent
plain-pandas computations inside the tests, never from the ETL's own output.

One Spark session (module fixture) is shared by every test here.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from blast_ray.config import ConfigError, DatasetConfig, EtlConfig, load_config
from blast_ray.etl import FormatError, raw_input_hash, run_etl

FIX = Path(__file__).parent / "fixtures" / "etl"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def spark():
    from blast_ray.etl.sparkio import get_spark

    s = get_spark("local[2]", "2g", shuffle_partitions=2)
    s.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "true")
    yield s


def test_accumulator_server_errors_go_to_the_log_not_stderr(spark, capsys, caplog):
    """A JVM killed under the driver (group SIGTERM) ends the accumulator server's connection in
    EOFError; socketserver would print that traceback to stderr, past the console filters."""
    import logging

    server = spark.sparkContext._accumulatorServer
    caplog.set_level(logging.DEBUG, logger="blast_ray.etl")
    try:
        raise EOFError("the JVM went away")
    except EOFError:
        server.handle_error(None, ("127.0.0.1", 1))
    err = capsys.readouterr().err
    assert "Traceback" not in err and "EOFError" not in err, err
    rec = [r for r in caplog.records if "accumulator server" in r.getMessage()]
    assert rec and rec[0].exc_info and rec[0].exc_info[0] is EOFError


def _read(dest, name) -> pd.DataFrame:
    return pq.read_table(Path(dest) / name).to_pandas()


def _pandas_kcore(df: pd.DataFrame, k: int) -> pd.DataFrame:
    while True:
        n = len(df)
        uc = df.groupby("u")["i"].transform("size")
        ic = df.groupby("i")["u"].transform("size")
        df = df[(uc >= k) & (ic >= k)]
        if len(df) == n:
            return df


def _reconciles(rc: dict) -> bool:
    return rc["raw_records"] == rc["interactions"] + rc["rejected"] + rc["removed_by_kcore"] + rc["collapsed_duplicates"]


def test_amazon2018_beauty_matches_pandas(spark, dataset, tmp_path):
    src = dataset("amazon-raw-2018")
    ds = DatasetConfig("beauty", "amazon2018", {"reviews": str(src / "All_Beauty_5.json.gz"), "meta": str(src / "meta_Magazine_Subscriptions.json.gz")})
    res = run_etl(spark, ds, EtlConfig(kcore=5), str(tmp_path))
    rc = res["row_counts"]
    # independent pandas: parse, keep latest per (user, item), 5-core
    raw = pd.read_json(src / "All_Beauty_5.json.gz", lines=True)
    raw = raw.rename(columns={"reviewerID": "u", "asin": "i"})
    dedup = raw.sort_values("unixReviewTime").drop_duplicates(["u", "i"], keep="last")
    core = _pandas_kcore(dedup[["u", "i"]], 5)
    assert rc["raw_records"] == len(raw) == 5269
    assert rc["rejected"] == 0
    assert rc["collapsed_duplicates"] == len(raw) - len(dedup)
    assert (rc["interactions"], rc["users"], rc["items"]) == (len(core), core.u.nunique(), core.i.nunique())
    assert _reconciles(rc)
    inter = _read(tmp_path, "interactions")
    assert len(inter) == len(core) and inter.user_idx.max() + 1 == rc["users"] and inter.item_idx.max() + 1 == rc["items"]
    users = _read(tmp_path, "users")
    assert sorted(users.user_id) == sorted(core.u.unique()) and list(users.user_idx) == list(range(len(users)))
    # meta of another category: no item matches, meta duplicates counted, HTML titles never leak
    meta = pd.read_json(src / "meta_Magazine_Subscriptions.json.gz", lines=True)
    assert rc["meta_records"] == len(meta) and rc["meta_duplicates"] == len(meta) - meta.asin.nunique()
    assert rc["items_with_meta"] == 0


def test_amazon2018_meta_html_cleaned(spark, dataset, tmp_path):
    """Items of the Magazine meta file: raw-HTML titles ('<span class=...') become null, entities decoded."""
    from pyspark.sql import functions as F

    from blast_ray.etl.readers import read_raw
    from blast_ray.etl.transform import clean_text

    src = dataset("amazon-raw-2018")
    fr = read_raw(spark, "amazon2018", {"reviews": str(src / "AMAZON_FASHION_5.json.gz"), "meta": str(src / "meta_Magazine_Subscriptions.json.gz")})
    titles = fr.items.select(F.col("title").alias("raw_t"), clean_text(F.col("title")).alias("t"), clean_text(F.col("brand")).alias("b")).toPandas()
    html = titles[titles.raw_t.str.contains("<span", na=False)]
    assert len(html) > 0 and html.t.isna().all()
    assert not titles.t.dropna().str.contains(r"<[a-z]|&amp;|&quot;", regex=True).any()
    assert titles.t.notna().sum() > 100
    assert "Disney & Me" in set(titles.t) and "Disney &amp; Me" in set(titles.raw_t)


def test_broken_lines_reconcile(spark, tmp_path):
    expected = {int(k): v for k, v in json.loads((FIX / "broken_reviews_2018.expected.json").read_text()).items()}
    assert len(set(expected.values())) >= 11 and len(expected) >= 18  # 19 kinds of broken line, 11 reasons
    ds = DatasetConfig("broken", "amazon2018", {"reviews": str(FIX / "broken_reviews_2018.json")})
    res = run_etl(spark, ds, EtlConfig(kcore=0), str(tmp_path))
    rc = res["row_counts"]
    rej = _read(tmp_path, "rejects")
    assert dict(zip(rej.line, rej.reason)) == expected
    assert rc["rejected"] == len(expected) and rc["collapsed_duplicates"] == 1 and rc["removed_by_kcore"] == 0
    assert rc["raw_records"] == sum(1 for _ in open(FIX / "broken_reviews_2018.json", "rb"))
    assert _reconciles(rc)
    for reason in set(expected.values()):
        assert rc[f"rejected_{reason}"] == list(expected.values()).count(reason)
    inter = _read(tmp_path, "interactions").merge(_read(tmp_path, "users"), on="user_idx").merge(_read(tmp_path, "items"), on="item_idx")
    u2 = inter[(inter.user_id == "U2") & (inter.item_id == "I1")]
    assert len(u2) == 1 and u2.timestamp.iloc[0] == 1400000200  # latest duplicate kept
    u5 = inter[inter.user_id == "U5"]
    assert u5.rating.iloc[0] == 3.0 and pd.isna(u5.timestamp.iloc[0])  # missing stays null


def test_amazon2014_fixture(spark, tmp_path):
    for name in ("reviews_Toys_5.json", "meta_Toys.json"):
        with open(FIX / name, "rb") as f, gzip.open(tmp_path / (name + ".gz"), "wb") as g:
            g.write(f.read())
    ds = DatasetConfig("toys14", "amazon2014", {"reviews": str(tmp_path / "reviews_Toys_5.json.gz"), "meta": str(tmp_path / "meta_Toys.json.gz")})
    out = tmp_path / "out"
    rc = run_etl(spark, ds, EtlConfig(kcore=0), str(out))["row_counts"]
    assert (rc["raw_records"], rc["collapsed_duplicates"], rc["interactions"], rc["users"], rc["items"]) == (5, 1, 4, 2, 2)
    assert (rc["meta_records"], rc["meta_rejected"]) == (4, 1)
    items = _read(out, "items").set_index("item_id")
    assert items.loc["1384719342", "title"] == "Wooden Train & Track Set"
    assert items.loc["1384719342", "brand"] == "Melissa & Doug"
    assert items.loc["1384719342", "description"] == "A child's first train."
    assert list(items.loc["1384719342", "categories"]) == ["Toys & Games", "Trains", "Wooden"]
    assert items.loc["B00004Y2UT", "image_url"].endswith("51abc.jpg") and pd.isna(items.loc["B00004Y2UT", "title"])
    rej = _read(out, "rejects")
    assert list(rej.reason) == ["malformed_python_literal"] and rej.line.iloc[0] == 3
    reviews = _read(out, "reviews")
    assert "Changed my mind again." in set(reviews.text) and "Second thoughts." not in set(reviews.text)


def test_amazon2023_fixture(spark, tmp_path):
    ds = DatasetConfig("toys23", "amazon2023", {"reviews": str(FIX / "Toys_2023.jsonl"), "meta": str(FIX / "meta_Toys_2023.jsonl")})
    rc = run_etl(spark, ds, EtlConfig(kcore=0), str(tmp_path))["row_counts"]
    assert (rc["raw_records"], rc["rejected"], rc["rejected_missing_item_id"], rc["interactions"], rc["items"]) == (4, 1, 1, 3, 2)
    items = _read(tmp_path, "items").set_index("item_id")
    assert items.loc["B00PARENT", "title"] == "Stacking Rings & Cups"
    assert items.loc["B00PARENT", "description"] == "Colorful rings. Ages 1+"
    assert items.loc["B00PARENT", "brand"] == "ToyCo" and items.loc["B00PARENT", "image_url"].endswith("l.jpg")
    inter = _read(tmp_path, "interactions")
    assert inter.timestamp.max() == 1590687728  # milliseconds -> seconds


def test_presplit_baby_keeps_published_split(spark, dataset, tmp_path):
    d = dataset("amazon-baby-5core")
    counts = {s: sum(len(v) for v in json.loads((d / f).read_text()).values()) for s, f in (("train", "train.json"), ("valid", "val.json"), ("test", "test.json"))}
    cfg = load_config(ROOT / "configs" / "amazon-baby.yaml")
    rc = run_etl(spark, cfg.dataset, cfg.etl, str(tmp_path))["row_counts"]
    assert (rc["split_train"], rc["split_valid"], rc["split_test"]) == (counts["train"], counts["valid"], counts["test"]) == (119674, 20559, 20559)
    assert (rc["users"], rc["items"], rc["interactions"]) == (19445, 7050, 160792)
    users = _read(tmp_path, "users")
    assert users.user_id.str.startswith("A").all()  # mapped back to reviewerIDs via user2id.json


def test_fail_fast_on_missing_path_and_unknown_format(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.paths.reviews"):
        raw_input_hash(DatasetConfig("x", "amazon2018", {"reviews": str(tmp_path / "nope.json.gz")}), EtlConfig())
    with pytest.raises(ConfigError, match="dataset.format"):  # rejected when the config is built
        DatasetConfig("x", "csv_guess", {"reviews": str(FIX / "Toys_2023.jsonl")})
    with pytest.raises(FormatError, match="does not start with the header"):
        run_etl(spark, DatasetConfig("x", "movielens_atomic", {"inter": str(FIX / "Toys_2023.jsonl")}), EtlConfig(), str(tmp_path))


def test_split_deterministic_and_disjoint(spark):
    from pyspark.sql import functions as F

    from blast_ray.etl.transform import split_per_user

    rows = [(u, i) for u in range(60) for i in range(1 + u % 25)]  # degrees 1..25
    df = spark.createDataFrame(rows, "user_idx long, item_idx long").repartition(3)
    a = split_per_user(df, seed=7).toPandas().sort_values(["user_idx", "item_idx"]).reset_index(drop=True)
    b = split_per_user(df.repartition(5), seed=7).toPandas().sort_values(["user_idx", "item_idx"]).reset_index(drop=True)
    c = split_per_user(df, seed=8).toPandas().sort_values(["user_idx", "item_idx"]).reset_index(drop=True)
    assert a.equals(b) and not a.split.equals(c.split)
    assert not a.duplicated(["user_idx", "item_idx"]).any()  # each pair in exactly one split
    for u, g in a.groupby("user_idx"):
        n, s = len(g), g.split.value_counts()
        assert s.get("train", 0) >= 1
        if n >= 10:
            assert (s.get("valid", 0), s.get("test", 0)) == (int(n * 0.1), int(n * 0.1))
        elif n >= 3:
            assert (s.get("valid", 0), s.get("test", 0)) == (1, 1)
        else:
            assert s.get("train", 0) == n
    assert F  # keeps the import used


def test_cli_ml100k_end_to_end_then_skip(spark, dataset, tmp_path, capsys):
    """`blast etl --config configs/ml-100k.yaml` through the pipeline driver; a second run skips."""
    from blast_ray.cli import main
    from blast_ray.store import ArtifactStore, latest_output

    d = dataset("movielens-100k")
    args = ["etl", "--config", str(ROOT / "configs" / "ml-100k.yaml"), "--store", str(tmp_path / "store")]
    args += [f"--set=dataset.paths.{r}={d / ('ml-100k.' + r)}" for r in ("inter", "item", "user")]
    assert main(args) == 0
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "skipped" in out
    etl_out = latest_output(ArtifactStore(tmp_path / "store"), "ml-100k", "etl")
    m = etl_out.manifest
    assert "raw" in m["inputs"] and _reconciles(m["row_counts"])
    # independent pandas: 5-core of the raw .inter file
    raw = pd.read_csv(d / "ml-100k.inter", sep="\t")
    raw.columns = ["u", "i", "r", "t"]
    core = _pandas_kcore(raw[["u", "i"]], 5)
    rc = m["row_counts"]
    assert (rc["users"], rc["items"], rc["interactions"], rc["rejected"]) == (core.u.nunique(), core.i.nunique(), len(core), 0)
    from blast_ray.etl.artifacts import load_interactions

    data = load_interactions(etl_out)
    assert data.train.nnz + data.valid.nnz + data.test.nnz == len(core)
    assert (data.train.multiply(data.test)).nnz == 0 and (data.train.multiply(data.valid)).nnz == 0
    assert (data.train.getnnz(axis=1) > 0).all()
    base = Path(etl_out.path())
    users = pq.read_table(base / "users").to_pandas()
    assert {"age", "gender", "occupation"} <= set(users.columns) and users.age.notna().all()
    items = pq.read_table(base / "items").to_pandas().set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story (1995)" and list(items.loc["1", "categories"]) == ["Animation", "Children's", "Comedy"]


def test_etl_to_s3_store(spark, s3_bucket, tmp_path):
    """Spark writes locally, the stage uploads through the ArtifactStore to the local S3 server."""
    from blast_ray.config import config_from_dict
    from blast_ray.etl.artifacts import load_interactions
    from blast_ray.pipeline import run_pipeline

    cfg = config_from_dict({
        "dataset": {"name": "toys23", "format": "amazon2023", "paths": {"reviews": str(FIX / "Toys_2023.jsonl"), "meta": str(FIX / "meta_Toys_2023.jsonl")}},
        "store": s3_bucket + "/blast", "etl": {"kcore": 0},
    })
    res = run_pipeline(cfg, stages=("etl",))
    assert res.ok, res.error
    out = None
    from blast_ray.store import ArtifactStore, latest_output

    out = latest_output(ArtifactStore(s3_bucket + "/blast"), "toys23", "etl")
    files = out.manifest["files"]
    assert any(f.startswith("interactions/") and f.endswith(".parquet") for f in files)
    assert load_interactions(out).stats()["interactions"] == 3
    assert run_pipeline(cfg, stages=("etl",)).status["etl"] == "skipped"
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_recbole_seq_scientific_keeps_leave_one_out(spark, dataset, tmp_path):
    d = dataset("amazon-scientific-2018")
    test = pd.read_csv(d / "Scientific.test.inter", sep="\t", dtype=str)
    seqs = {u: s.split(" ") + [t] for u, s, t in zip(test.iloc[:, 0], test.iloc[:, 1], test.iloc[:, 2])}
    pairs = {(u, i) for u, s in seqs.items() for i in s}
    cfg = load_config(ROOT / "configs" / "amazon-scientific.yaml", overrides=["etl.kcore=0", "etl.keep_presplit=true"])
    rc = run_etl(spark, cfg.dataset, cfg.etl, str(tmp_path))["row_counts"]
    assert rc["raw_records"] == sum(len(s) for s in seqs.values())
    assert rc["interactions"] == len(pairs) and rc["users"] == len(seqs) == 2928
    assert rc["split_test"] == len(seqs) and _reconciles(rc)
    items = _read(tmp_path, "items")
    assert items.item_id.str.match(r"^[A-Z0-9]{10}$").all()  # mapped back to ASINs via item2index
    glue = items[items.item_id == "B0000223UV"]
    if len(glue):
        assert glue.title.iloc[0].startswith("Gorilla Original Gorilla Glue") and glue.brand.iloc[0] == "Gorilla"
    assert items.title.notna().mean() > 0.95


def _expected_lines(path, parse, header: bool, encoding="utf-8"):
    """Independent plain-Python reading: (good records, {line: reason}) with parse(fields) -> record | reason."""
    good, bad = [], {}
    text = Path(path).read_bytes().decode(encoding)
    for ln, raw in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), start=1):
        if header and ln == 1:
            continue
        if raw.strip() == "":
            bad[ln] = "empty_line"
            continue
        r = parse(raw)
        if isinstance(r, str):
            bad[ln] = r
        else:
            good.append(r)
    return good, bad


def _ids_frame(dest):
    inter = _read(dest, "interactions").merge(_read(dest, "users")[["user_idx", "user_id"]], on="user_idx")
    return inter.merge(_read(dest, "items")[["item_idx", "item_id"]], on="item_idx")


def test_seq_txt_sports_slice_matches_pandas(spark, dataset, tmp_path):
    """seq_txt on the first 600 real lines of Amazon Sports (ICLRec 'user item item ...') plus
    two broken lines: every token is a record, repeats of an item in a user's sequence collapse
    to one interaction, bad lines are rejected with their line number."""
    src = dataset("amazon-sports-5core") / "Sports_and_Outdoors.txt"
    with open(src) as f:
        head = [next(f) for _ in range(600)]
    path = tmp_path / "sports_head.txt"
    path.write_text("".join(head) + "999999\n" + "\t\n")  # user without items, tab-only line

    def parse(raw):
        t = raw.split()
        return "no_items" if len(t) < 2 else [(t[0], i) for i in t[1:]]

    good, bad = _expected_lines(path, parse, header=False)
    tokens = [p for line in good for p in line]
    pairs = pd.DataFrame(tokens, columns=["u", "i"]).drop_duplicates()
    assert bad == {601: "no_items", 602: "empty_line"}
    ds = DatasetConfig("sports", "seq_txt", {"sequences": str(path)})
    out = tmp_path / "out"
    rc = run_etl(spark, ds, EtlConfig(kcore=0, shuffle_partitions=2), str(out))["row_counts"]
    assert rc["raw_records"] == len(tokens) + len(bad)
    assert (rc["rejected"], rc["rejected_no_items"], rc["rejected_empty_line"]) == (2, 1, 1)
    assert rc["collapsed_duplicates"] == len(tokens) - len(pairs)
    assert (rc["interactions"], rc["users"], rc["items"]) == (len(pairs), pairs.u.nunique(), pairs.i.nunique())
    assert _reconciles(rc)
    got = _ids_frame(out)
    assert set(zip(got.user_id, got.item_id)) == set(zip(pairs.u, pairs.i))
    assert got.rating.isna().all() and got.timestamp.isna().all()
    assert dict(zip(_read(out, "rejects").line, _read(out, "rejects").reason)) == bad


def test_mmrec_inter_fixture_keeps_x_label_split(spark, tmp_path):
    """MMRec's .inter (userID itemID rating timestamp x_label, tab, header): x_label 0/1/2 is the
    split; bad labels / ratings / widths are rejected; a repeated pair keeps its latest row."""
    path = FIX / "mmrec_toy.inter"

    def parse(raw):
        f = raw.split("\t")
        if len(f) != 5:
            return "wrong_field_count"
        if f[4] not in ("0", "1", "2"):
            return "bad_split_label"
        try:
            r = float(f[2])
        except ValueError:
            return "bad_rating"
        if not 1 <= r <= 5:
            return "rating_out_of_range"
        return (f[0], f[1], r, int(f[3]), ("train", "valid", "test")[int(f[4])])

    good, bad = _expected_lines(path, parse, header=True)
    df = pd.DataFrame(good, columns=["u", "i", "r", "t", "split"])
    latest = df.sort_values("t").drop_duplicates(["u", "i"], keep="last")
    assert len(bad) == 5 and len(df) - len(latest) == 1  # the fixture holds what it claims
    ds = DatasetConfig("mmrec", "mmrec_inter", {"inter": str(path)})
    out = tmp_path / "out"
    res = run_etl(spark, ds, EtlConfig(kcore=0, shuffle_partitions=2), str(out))
    rc = res["row_counts"]
    assert res["extra"]["presplit_kept"] is True
    assert rc["raw_records"] == len(df) + len(bad) and rc["rejected"] == len(bad)
    for reason in set(bad.values()):
        assert rc[f"rejected_{reason}"] == list(bad.values()).count(reason)
    assert rc["collapsed_duplicates"] == 1 and _reconciles(rc)
    assert (rc["interactions"], rc["users"], rc["items"]) == (len(latest), latest.u.nunique(), latest.i.nunique())
    for s in ("train", "valid", "test"):
        assert rc[f"split_{s}"] == int((latest.split == s).sum())
    got = _ids_frame(out)
    assert set(zip(got.user_id, got.item_id, got.split, got.rating, got.timestamp)) == set(
        zip(latest.u, latest.i, latest.split, latest.r, latest.t))
    assert dict(zip(_read(out, "rejects").line, _read(out, "rejects").reason)) == bad


def _write_grouplens_ml100k(src: Path, dest: Path, max_user: int, max_item: int):
    """u.data / u.item / u.user in GroupLens' published ml-100k layout, written from the real
    RecBole copy (users <= max_user, items <= max_item): u.data 'user<TAB>item<TAB>rating<TAB>ts';
    u.item ISO-8859-1 'id|title (year)|release date|video date|url|19 genre flags'; u.user
    'id|age|gender|occupation|zip'."""
    from blast_ray.etl.readers import ML_GENRES

    inter = pd.read_csv(src / "ml-100k.inter", sep="\t").set_axis(["u", "i", "r", "t"], axis=1)
    inter = inter[(inter.u <= max_user) & (inter.i <= max_item)]
    inter.to_csv(dest / "u.data", sep="\t", header=False, index=False)
    items = pd.read_csv(src / "ml-100k.item", sep="\t", keep_default_na=False).set_axis(["i", "title", "year", "genres"], axis=1)
    items = items[items.i <= max_item]
    with open(dest / "u.item", "w", encoding="ISO-8859-1", newline="\n") as f:
        for r in items.itertuples():
            flags = "|".join("1" if g in r.genres.split() else "0" for g in ML_GENRES)
            title = f"{r.title} ({r.year})" if str(r.year).strip() else r.title
            f.write(f"{r.i}|{title}|||http://us.imdb.com/M/title-exact?{r.i}|{flags}\n")
    users = pd.read_csv(src / "ml-100k.user", sep="\t", dtype=str).set_axis(["u", "age", "gender", "occ", "zip"], axis=1)
    users = users[users.u.astype(int) <= max_user]
    users.to_csv(dest / "u.user", sep="|", header=False, index=False)
    return inter, items, users


def test_movielens_raw_grouplens_layout_matches_pandas(spark, dataset, tmp_path):
    d = dataset("movielens-100k")
    raw_dir = tmp_path / "ml-100k"
    raw_dir.mkdir()
    inter, items, users = _write_grouplens_ml100k(d, raw_dir, max_user=150, max_item=600)
    with open(raw_dir / "u.data", "a") as f:
        f.write("7\t3\t0\t881250949\n")  # rating 0: out of the 1-5 range
        f.write("7\t3\t4\n")  # truncated line
    core = _pandas_kcore(inter[["u", "i"]], 5)
    ds = DatasetConfig("ml-raw", "movielens_raw", {"ratings": str(raw_dir / "u.data"), "items": str(raw_dir / "u.item"),
                                                   "users": str(raw_dir / "u.user")})
    out = tmp_path / "out"
    rc = run_etl(spark, ds, EtlConfig(kcore=5, shuffle_partitions=2), str(out))["row_counts"]
    assert rc["raw_records"] == len(inter) + 2
    assert (rc["rejected_rating_out_of_range"], rc["rejected_wrong_field_count"]) == (1, 1)
    assert (rc["interactions"], rc["users"], rc["items"]) == (len(core), core.u.nunique(), core.i.nunique())
    assert rc["collapsed_duplicates"] == 0 and _reconciles(rc)
    assert (rc["meta_records"], rc["meta_rejected"], rc["user_side_records"]) == (len(items), 0, len(users))
    got_items = _read(out, "items").set_index("item_id")
    expect = items.set_index(items.i.astype(str))
    assert set(got_items.index) == set(core.i.astype(str))
    assert got_items.loc["1", "title"] == "Toy Story (1995)"
    assert list(got_items.loc["1", "categories"]) == ["Animation", "Children's", "Comedy"]
    if "543" in got_items.index:  # latin-1 title decoded
        assert got_items.loc["543", "title"] == "Misérables, Les (1995)"
    for i in got_items.index:
        assert sorted(got_items.loc[i, "categories"]) == sorted(expect.loc[i, "genres"].split())
    got_users = _read(out, "users").set_index("user_id")
    ref_users = users.set_index("u").loc[got_users.index]
    assert (got_users.age.astype(str) == ref_users.age).all() and (got_users.occupation == ref_users.occ).all()
    assert (got_users.gender == ref_users.gender).all()
