"""The Spark request builder of the profiles stage (``profiles/requests.py``) gives exactly the
fields JSON and keys of the pure pandas builders (``profiles/fields.py``): the same prompts, and
profiles committed by earlier runs (keyed by the pandas builders) keep being reused.

Real data: the real ETL output of MovieLens-100k (side columns, years, genres, no reviews) and
Amazon All_Beauty 2018 5-core (real reviews, train/valid/test split)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from blast_ray.etl import artifacts as etl_artifacts
from blast_ray.profiles.fields import build_item_fields, build_user_fields, mix_order, _mix
from blast_ray.profiles.prompts import profile_key
from blast_ray.store import ArtifactStore, latest_output

TESTS = Path(__file__).resolve().parent


def _profiles_helpers():
    spec = importlib.util.spec_from_file_location("_profiles_helpers", TESTS / "test_profiles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mix_order_sorts_like_uint64():
    import numpy as np

    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 2**40, 5000), rng.integers(0, 2**40, 5000)
    assert (np.argsort(mix_order(a, b), kind="stable") == np.argsort(_mix(a, b), kind="stable")).all()
    assert (mix_order(a, b) < 0).any() and (mix_order(a, b) > 0).any()  # both halves of the uint64 range occur


def _pandas_requests(etl, kind, cfg_kw, item_profiles: dict[int, str], model="template"):
    items = etl_artifacts.load_frame(etl, "items")
    users = etl_artifacts.load_frame(etl, "users")
    inter = etl_artifacts.load_frame(etl, "interactions")
    reviews = etl_artifacts.load_frame(etl, "reviews", required=False)
    if kind == "item":
        rows = build_item_fields(items, reviews, inter, cfg_kw["max_reviews"])
    else:
        titles = {int(i): str(t) if isinstance(t, str) else "" for i, t in zip(items["item_idx"], items["title"])}
        rows = build_user_fields(users, inter, titles, item_profiles, reviews, cfg_kw["max_items"])
    return {i: (profile_key(kind, "v1", model, f), json.dumps(f, sort_keys=True)) for i, f in rows}


def _spark_requests(spark, etl, kind, cfg_kw, item_profiles: dict[int, str], staging: str, model="template"):
    from blast_ray.profiles import requests

    t = {n: requests.read_etl(spark, etl, n, staging) for n in ("items", "users", "interactions", "reviews")}
    if kind == "item":
        df = requests.item_requests(spark, t["items"], t["interactions"], t["reviews"], cfg_kw["max_reviews"], "v1", model)
    else:
        prof = spark.createDataFrame(pd.DataFrame({"idx": list(item_profiles), "text": list(item_profiles.values())}),
                                     "idx long, text string") if item_profiles else None
        df = requests.user_requests(spark, t["users"], t["interactions"], t["items"], t["reviews"], prof,
                                    cfg_kw["max_items"], "v1", model)
    got = df.toPandas()
    assert set(got["kind"]) <= {kind} and not got["strict"].any()
    assert got["idx"].is_unique
    return {int(i): (k, f) for i, k, f in zip(got["idx"], got["key"], got["fields"])}


def _compare(spark, etl, staging, item_profiles, max_reviews, max_items):
    kw = dict(max_reviews=max_reviews, max_items=max_items)
    for kind in ("item", "user"):
        want = _pandas_requests(etl, kind, kw, item_profiles)
        got = _spark_requests(spark, etl, kind, kw, item_profiles, staging)
        assert len(want) > 50 and set(got) == set(want)
        diff = [i for i in want if got[i] != want[i]]
        assert not diff, f"{kind} {diff[0]}: spark {got[diff[0]][1][:300]} != pandas {want[diff[0]][1][:300]}"
    return want


@pytest.fixture(scope="module")
def spark():
    from blast_ray.etl.sparkio import get_spark

    return get_spark("local[2]", "2g", 4)


def test_spark_requests_equal_pandas_movielens_real_etl(spark, ml100k_etl_store, tmp_path):
    etl = latest_output(ArtifactStore(str(ml100k_etl_store)), "ml-100k", "etl")
    assert etl is not None
    items = etl_artifacts.load_frame(etl, "items")
    # profiles for some items, one longer than the 400 characters a user prompt keeps
    profiles = {int(i): f"A profile of {t}. " * (1 + int(i) % 40) for i, t in zip(items["item_idx"], items["title"])
                if int(i) % 3 == 0}
    assert max(len(p) for p in profiles.values()) > 400
    users = _compare(spark, etl, str(tmp_path), profiles, max_reviews=5, max_items=10)
    assert any('"about": "age ' in f for _, f in users.values())  # side columns reached the prompts


def test_spark_requests_equal_pandas_amazon_beauty(spark, dataset, data_dir, tmp_path):
    dataset("amazon-raw-2018")
    h = _profiles_helpers()
    store = ArtifactStore(str(tmp_path / "store"))
    etl = h.write_etl(store, "beauty", h.beauty_tables(data_dir))
    items = etl_artifacts.load_frame(etl, "items")
    profiles = {int(i): f"Profile {i}: " + "long words " * (int(i) % 60) for i in items["item_idx"] if int(i) % 2}
    # a sample limit below most items' review counts (sampling order matters) and an unlimited one
    for max_reviews, max_items in ((3, 4), (10**6, 10**6)):
        users = _compare(spark, etl, str(tmp_path / f"s{max_reviews}"), profiles, max_reviews, max_items)
    assert sum('"review": ""' not in f for _, f in users.values()) > 100  # real reviews reached user prompts


def test_stage_spark_and_driver_builders_give_the_same_profiles(tmp_path, data_dir, ray_local):
    """profiles.request_builder: the small-data path (pandas in the driver; also where pyspark is
    missing, e.g. the CPU vLLM venv) writes the same rows and keys as the Spark path, and a re-run on
    either path reuses the other's committed profiles."""
    h = _profiles_helpers()
    tables = h.beauty_tables(data_dir)
    kw = dict(engine="template", batch_size=64, sample_items=40, sample_users=60, max_reviews_per_item=3,
              max_items_per_user=4)
    other = {"spark": "driver", "driver": "spark"}
    got = {}
    for builder in ("spark", "driver"):
        store = ArtifactStore(str(tmp_path / f"store-{builder}"))
        etl = h.write_etl(store, "beauty", tables)
        out, m = h.run_stage(h.make_cfg(store.root, "beauty", "beauty products", request_builder=builder, **kw), store, etl)
        assert m["extra"]["generated"] == {"item": 40, "user": 60}
        from blast_ray.profiles.artifacts import load_profiles

        got[builder] = load_profiles(out)[["kind", "idx", "key", "text"]]
        # the other path reuses every committed row (same keys)
        _, m2 = h.run_stage(h.make_cfg(store.root, "beauty", "beauty products", request_builder=other[builder],
                                       **{**kw, "batch_size": 32}), store, etl)
        assert m2["extra"]["generated"] == {"item": 0, "user": 0}
        assert m2["extra"]["reused_committed"] == {"item": 40, "user": 60}
    pd.testing.assert_frame_equal(got["spark"], got["driver"])


def test_request_builder_auto_follows_the_interaction_count(monkeypatch):
    """auto: Spark from profiles.spark_min_interactions ETL interactions on (when pyspark exists);
    'spark' without pyspark is a one-line error naming the setting."""
    from types import SimpleNamespace

    from blast_ray.config import ProfilesConfig
    from blast_ray.profiles import stage

    etl = SimpleNamespace(manifest={"row_counts": {"interactions": 100_000}})
    assert stage._use_spark(ProfilesConfig(), etl) is False
    assert stage._use_spark(ProfilesConfig(spark_min_interactions=100_000), etl) is True
    assert stage._use_spark(ProfilesConfig(request_builder="driver", spark_min_interactions=0), etl) is False
    assert stage._use_spark(ProfilesConfig(request_builder="spark"), etl) is True
    monkeypatch.setattr(stage, "_spark_available", lambda: False)
    assert stage._use_spark(ProfilesConfig(spark_min_interactions=0), etl) is False
    with pytest.raises(RuntimeError, match="profiles.request_builder=spark needs pyspark"):
        stage._use_spark(ProfilesConfig(request_builder="spark"), etl)
