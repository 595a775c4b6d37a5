"""The ETL's append-only id dictionary (``etl.id_dictionary_from``) on two real days of
All_Beauty_5 (2018): every raw id of day 1 keeps its index on day 2, day 2's new raw ids are
appended in sorted order, ids that disappear keep their reserved index, and the interactions
still point at the right raw ids. Expected values come from plain pandas over the raw file."""

from __future__ import annotations

import json

import gzip
import pandas as pd
import pyarrow.parquet as pq
import pytest

from blast_ray.config import DatasetConfig, EtlConfig
from blast_ray.etl import raw_input_hash, run_etl


@pytest.fixture(scope="module")
def spark():
    from blast_ray.etl.sparkio import get_spark

    yield get_spark("local[2]", "2g", shuffle_partitions=2)


def _read(dest, name) -> pd.DataFrame:
    return pq.read_table(f"{dest}/{name}").to_pandas()


@pytest.fixture(scope="module")
def two_days(dataset, tmp_path_factory):
    """day1.json: the reviews before the median review time; all.json: every review (day 1 + day 2)."""
    with gzip.open(dataset("amazon-raw-2018") / "All_Beauty_5.json.gz", "rt") as f:
        lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    rows = pd.DataFrame([json.loads(x) for x in lines])
    cut = rows.unixReviewTime.median()
    d = tmp_path_factory.mktemp("days")
    day1 = [x for x, t in zip(lines, rows.unixReviewTime) if t < cut]
    (d / "day1.json").write_text("".join(day1))
    (d / "all.json").write_text("".join(lines))
    return d, rows, rows[rows.unixReviewTime < cut]


def _mapping(dest, table, idx, raw) -> dict[str, int]:
    df = _read(dest, table)
    return dict(zip(df[raw], df[idx]))


def test_old_ids_keep_their_index_new_ones_appended(spark, two_days, tmp_path):
    d, rows, day1 = two_days
    ds1 = DatasetConfig("beauty", "amazon2018", {"reviews": str(d / "day1.json")})
    ds2 = DatasetConfig("beauty", "amazon2018", {"reviews": str(d / "all.json")})
    run_etl(spark, ds1, EtlConfig(kcore=0), str(tmp_path / "e1"))
    fresh = run_etl(spark, ds2, EtlConfig(kcore=0), str(tmp_path / "fresh"))
    cfg2 = EtlConfig(kcore=0, id_dictionary_from=str(tmp_path / "e1"))
    res = run_etl(spark, ds2, cfg2, str(tmp_path / "e2"))
    # the key enters the ETL fingerprint (raw_input_hash hashes the etl section)
    assert raw_input_hash(ds2, cfg2) != raw_input_hash(ds2, EtlConfig(kcore=0))

    for table, idx, raw, col in (("users", "user_idx", "user_id", "reviewerID"), ("items", "item_idx", "item_id", "asin")):
        old, new = _mapping(tmp_path / "e1", table, idx, raw), _mapping(tmp_path / "e2", table, idx, raw)
        appended = sorted(set(rows[col]) - set(day1[col]))
        assert len(appended) > 0 and set(old) == set(day1[col])  # day 2 really brings new ids
        assert all(new[k] == v for k, v in old.items())  # every day-1 raw id keeps its index
        assert [new[k] for k in appended] == list(range(len(old), len(old) + len(appended)))  # appended, sorted
        assert sorted(new.values()) == list(range(len(new)))  # still dense
        # without the dictionary, sorting renumbers: the reason a warm start used to be impossible
        sorted_ids = _mapping(tmp_path / "fresh", table, idx, raw)
        assert any(sorted_ids[k] != v for k, v in old.items())
        counts = res["extra"]["id_dictionary"][table]
        assert counts == {"kept": len(old), "new": len(appended), "absent": 0}
    assert res["row_counts"]["users"] == fresh["row_counts"]["users"]
    # interactions point at the right raw ids: (user_id, item_id) pairs equal the raw file's pairs
    inter = _read(tmp_path / "e2", "interactions")
    u = {v: k for k, v in _mapping(tmp_path / "e2", "users", "user_idx", "user_id").items()}
    i = {v: k for k, v in _mapping(tmp_path / "e2", "items", "item_idx", "item_id").items()}
    got = set(zip(inter.user_idx.map(u), inter.item_idx.map(i)))
    assert got == set(zip(rows.reviewerID, rows.asin))


def test_absent_ids_keep_their_reserved_index(spark, two_days, tmp_path):
    """A filter that drops every review of some users/items (here min_rating 5): they leave no
    interactions but stay in the dictionary with their index (the dictionary only grows)."""
    d, rows, day1 = two_days
    run_etl(spark, DatasetConfig("beauty", "amazon2018", {"reviews": str(d / "day1.json")}), EtlConfig(kcore=0), str(tmp_path / "e1"))
    res = run_etl(spark, DatasetConfig("beauty", "amazon2018", {"reviews": str(d / "all.json")}),
                  EtlConfig(kcore=0, min_rating=5, id_dictionary_from=str(tmp_path / "e1")), str(tmp_path / "e2"))
    old = _mapping(tmp_path / "e1", "users", "user_idx", "user_id")
    new = _mapping(tmp_path / "e2", "users", "user_idx", "user_id")
    kept5 = rows[rows.overall >= 5]
    gone = set(old) - set(kept5.reviewerID)
    assert gone and all(new[k] == v for k, v in old.items())
    inter = _read(tmp_path / "e2", "interactions")
    assert not set(inter.user_idx) & {old[k] for k in gone}  # reserved rows without interactions
    assert res["extra"]["id_dictionary"]["users"]["absent"] == len(gone)
    assert res["row_counts"]["users"] == len(new) == len(old) + len(set(kept5.reviewerID) - set(old))


def test_bad_dictionary_uri_is_one_clear_line(spark, two_days, tmp_path):
    d, _, _ = two_days
    with pytest.raises(ValueError, match="etl.id_dictionary_from"):
        run_etl(spark, DatasetConfig("beauty", "amazon2018", {"reviews": str(d / "day1.json")}),
                EtlConfig(kcore=0, id_dictionary_from=str(tmp_path / "nowhere")), str(tmp_path / "e"))
