"""jobs.nightly: promotion rule, inbox change detection on real All_Beauty reviews split by day,
idempotency (same inputs -> no-op), refusal of a concurrent run, and the full nightly retrain over
two successive real days (incremental profiles, warm start, promotion) plus a worse model that is
not promoted."""

from __future__ import annotations

import gzip
import json
import time

import pandas as pd
import pytest
import yaml

from blast_ray.config import load_config
from blast_ray.runs import LockHeld, StoreLock, get_latest, load_run
from blast_ray.store import ArtifactStore
from jobs.nightly import NightlyConfig, combine, decide_promotion, inbox_files, run_nightly
from jobs.smoke import smoke_config


def test_decide_promotion():
    m = "valid.recall@20"
    assert decide_promotion({m: 0.1}, None, m, 0.0)[0]
    assert decide_promotion({m: 0.099}, {m: 0.1}, m, 0.002)[0]
    ok, why = decide_promotion({m: 0.09}, {m: 0.1}, m, 0.005)
    assert not ok and "worse" in why
    assert not decide_promotion({}, {m: 0.1}, m, 0.0)[0]


def _split_by_day(dataset, inbox, n=4000):
    """Two dated inbox files of real All_Beauty_5 reviews, split at the median review time."""
    with gzip.open(dataset("amazon-raw-2018") / "All_Beauty_5.json.gz", "rt") as f:
        rows = [json.loads(line) for _, line in zip(range(n), f)]
    rows.sort(key=lambda r: r["unixReviewTime"])
    cut = rows[len(rows) // 2]["unixReviewTime"]
    day1 = [r for r in rows if r["unixReviewTime"] < cut]
    day2 = [r for r in rows if r["unixReviewTime"] >= cut]
    inbox.mkdir()
    (inbox / "day1.json").write_text("".join(json.dumps(r) + "\n" for r in day1))
    return day1, day2


def test_inbox_detection_idempotency_and_lock(dataset, data_dir, tmp_path):
    inbox = tmp_path / "inbox"
    day1, day2 = _split_by_day(dataset, inbox)
    files = inbox_files(str(inbox))
    assert list(files) == ["day1.json"]
    (inbox / "day2.json").write_text("".join(json.dumps(r) + "\n" for r in day2))
    files2 = inbox_files(str(inbox))
    assert files2["day1.json"] == files["day1.json"] and "day2.json" in files2
    combined = combine(str(inbox), sorted(files2), str(tmp_path / "work" / "reviews.json"))
    assert sum(1 for _ in open(combined)) == len(day1) + len(day2)

    cfg = load_config(smoke_config(data_dir, str(tmp_path / "store"), tmp_path / "cfg.yaml"))
    store = ArtifactStore(cfg.store)
    ncfg = NightlyConfig(str(inbox), work_dir=str(tmp_path / "work"))
    # Same inputs as the last successful run: nothing happens, no run is created.
    store.write_json({"files": files2, "run_id": "prev"}, "ml-100k", "nightly", "STATE.json")
    t0 = time.time()
    assert run_nightly(cfg, ncfg)["action"] == "noop"
    assert not store.list_dir("ml-100k", "runs") or store.list_dir("ml-100k", "runs") == []
    assert time.time() - t0 < 10
    # A concurrent run (lock held by someone else) is refused.
    with StoreLock(store, "ml-100k", ttl_s=60, owner="other-nightly"):
        with pytest.raises(LockHeld, match="other-nightly"):
            run_nightly(cfg, ncfg)


# ---- the two-day nightly retrain on real All_Beauty_5 reviews ----------------------------------
# Day boundaries (UTC) chosen from the data: 2017-09-07 is the busiest day of the file whose
# reviewers and products had all reviewed / been reviewed before, so the id space stays the same
# and day 2 can warm start; 2017-09-08 likewise (day 3).
DAY2, DAY3 = 17416, 17417  # days since the epoch
MAX_ITEMS_PER_USER = 3  # train items sampled into a user's profile (its template text quotes 3 reviews anyway)


def _beauty_days(dataset):
    """Raw JSON lines of All_Beauty_5 (unchanged bytes) and their parsed rows, grouped by UTC day."""
    with gzip.open(dataset("amazon-raw-2018") / "All_Beauty_5.json.gz", "rt") as f:
        lines = [line for line in f if line.strip()]
    rows = pd.DataFrame([json.loads(line) for line in lines])
    rows["raw"] = [line if line.endswith("\n") else line + "\n" for line in lines]
    rows["day"] = rows["unixReviewTime"] // 86400
    return rows


def _nightly_config(path, reviews, store):
    cfg = {
        "dataset": {"name": "beauty", "format": "amazon2018", "category": "beauty products", "paths": {"reviews": str(reviews)}},
        "store": str(store),
        # recommend and report add nothing to what the nightly decides; augment is on (the default DAG's)
        "stages": ["etl", "profiles", "features", "graphs", "augment", "train", "evaluate"],
        # no k-core: a day-1 prefix of a 5-core file is not 5-core, and filtering it would let a
        # later day pull users back in (a changed id space every night)
        "etl": {"kcore": 0, "shuffle_partitions": 2},
        # every TRAIN review of an item goes into its prompt fields, so "item's train reviews changed"
        # <=> "item profile regenerated" exactly (with a sample of n reviews it holds only when the
        # change falls in the sample)
        "profiles": {"engine": "template", "max_reviews_per_item": 100000, "max_items_per_user": MAX_ITEMS_PER_USER,
                     "request_builder": "spark"},  # the dump-scale builder on two real days
        # 1.5 CPUs -> a 2-thread encoder actor (fractional: the pool must not hold both CPUs)
        "features": {"batch_size": 64, "num_cpus_per_actor": 1.5},
        "graphs": {"knn_k": 5, "distributed": False},
        "augment": {"num_blocks": 1, "knn_k": 5},
        "train": {"model": "blast", "epochs": 6, "patience": 6, "lr": 0.005, "embedding_dim": 32, "progress": False},
        "evaluate": {"ks": [10, 20]},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _write_day(inbox, name, rows):
    (inbox / name).write_text("".join(rows["raw"]))


def test_nightly_two_days_on_real_reviews(dataset, tmp_path, ray_local):
    t0 = time.time()
    rows = _beauty_days(dataset)
    day1, day2, day3 = rows[rows.day < DAY2], rows[rows.day == DAY2], rows[rows.day == DAY3]
    assert len(day1) > 4000 and len(day2) >= 10 and len(day3) >= 5
    inbox, store_dir = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    _write_day(inbox, "2017-09-06.json", day1)  # the backlog up to and including 2017-09-06
    cfg_path = _nightly_config(tmp_path / "beauty.yaml", inbox / "2017-09-06.json", store_dir)
    ncfg = NightlyConfig(str(inbox), work_dir=str(tmp_path / "work"), tolerance=0.02)
    store = ArtifactStore(str(store_dir))

    # ---- day 1: nothing promoted yet -> trained from scratch and promoted
    r1 = run_nightly(load_config(cfg_path), ncfg)
    assert r1["action"] == "promoted", r1
    assert "no promoted model" in r1["reason"] and r1["warm_start_from"] is None
    assert get_latest(store, "beauty")["run_id"] == r1["run_id"]
    run1 = load_run(store, "beauty", r1["run_id"])
    t1 = time.time() - t0

    # ---- day 2: a new inbox file with the reviews of 2017-09-07
    _write_day(inbox, "2017-09-07.json", day2)
    r2 = run_nightly(load_config(cfg_path), ncfg)
    run2 = load_run(store, "beauty", r2["run_id"])
    assert r2["new_files"] == ["2017-09-07.json"]
    # The raw input changed: the nightly's ETL run produced a new ETL output, which the full run used.
    assert run2["stages"]["etl"]["fingerprint"] != run1["stages"]["etl"]["fingerprint"]
    assert run2["stages"]["etl"]["row_counts"]["interactions"] > run1["stages"]["etl"]["row_counts"]["interactions"]
    etl1, etl2 = (ArtifactStore(r["stages"]["etl"]["uri"]) for r in (run1, run2))

    # Independently of the profiles stage: which products' prompts changed on day 2. An item's
    # prompt quotes the reviews (text or summary) of its TRAIN interactions only, so it changes
    # exactly when the set of train reviewers with a review changes: a new review that lands in
    # train, or an older review that moves between splits when its reviewer is re-split. Computed
    # from the raw JSON rows and each run's ETL split, mapped to dense ids through the ETL tables.
    items2 = etl2.read_table("items", columns=["item_idx", "item_id"]).to_pandas()
    users2 = etl2.read_table("users", columns=["user_idx", "user_id"]).to_pandas()
    item_idx = dict(zip(items2.item_id, items2.item_idx))
    user_idx = dict(zip(users2.user_id, users2.user_idx))
    i1 = etl1.read_table("interactions").to_pandas()
    i2 = etl2.read_table("interactions").to_pandas()

    def train_reviewers(raw, inter):
        """item_idx -> frozenset of user_idx whose review of it (with text) is a train interaction."""
        has_text = raw["reviewText"].fillna("").str.strip().ne("") | raw["summary"].fillna("").str.strip().ne("")
        pairs = {(int(user_idx[u]), int(item_idx[a])) for u, a in zip(raw.loc[has_text, "reviewerID"], raw.loc[has_text, "asin"])}
        train = inter[inter.split == "train"]
        out: dict[int, set] = {}
        for u, i in zip(train.user_idx, train.item_idx):
            if (int(u), int(i)) in pairs:
                out.setdefault(int(i), set()).add(int(u))
        return {i: frozenset(us) for i, us in out.items()}

    before, after = train_reviewers(day1, i1), train_reviewers(pd.concat([day1, day2]), i2)
    new_items = {i for i in set(before) | set(after) if before.get(i) != after.get(i)}
    new_users = {int(user_idx[u]) for u in day2["reviewerID"]}
    assert new_items and len(new_users) == 7  # facts of the file, checked so the test states them

    prof = run2["stages"]["profiles"]
    assert prof["status"] == "ran"
    pm = ArtifactStore(prof["uri"]).read_json("_MANIFEST.json")["extra"]
    n_items, n_users = len(items2), len(users2)
    # Items: regenerated exactly when their train reviews changed; all the others reused from day 1.
    assert set(pm["generated_idx"]["item"]) == new_items and pm["generated"]["item"] == len(new_items)
    assert pm["reused_committed"]["item"] == n_items - len(new_items) > 0
    # Users: a user profile reads a sample (max_items_per_user) of the user's TRAIN items with each
    # item's title, profile text (first 400 chars) and the user's review. So it changes when (a) the
    # user's sampled train items change (a new review re-splits that user), or (b) a sampled item's
    # profile text changes (only items in new_items can). Lower bound: reviewers of day 2
    # whose train set changed and fits in the sample; upper bound: day-2 reviewers plus users with
    # a changed item in train.
    train_sets = [df[df.split == "train"].groupby("user_idx")["item_idx"].apply(frozenset).to_dict() for df in (i1, i2)]
    must = {u for u in new_users if train_sets[0].get(u) != train_sets[1].get(u) and len(train_sets[1].get(u, ())) <= MAX_ITEMS_PER_USER}
    may = new_users | {u for u, items in train_sets[1].items() if items & new_items}
    gen_users = set(pm["generated_idx"]["user"])
    assert must <= gen_users <= may, (sorted(must), sorted(gen_users), sorted(may))
    assert pm["generated"]["user"] == len(gen_users) and pm["reused_committed"]["user"] == n_users - len(gen_users) > 0
    # Features: the vectors of unchanged profile texts are copied from day 1's output by key; only
    # regenerated profiles can need encoding (a regenerated text may still equal day 1's).
    fx = ArtifactStore(run2["stages"]["features"]["uri"]).read_json("_MANIFEST.json")["extra"]
    assert fx["reused_from"] == run1["stages"]["features"]["fingerprint"]
    reuse_i, reuse_u = fx["reuse"]["item_text"], fx["reuse"]["user_text"]
    assert 0 < reuse_i["encoded"] <= len(new_items) and reuse_i["encoded"] + reuse_i["reused"] == n_items
    assert reuse_u["encoded"] <= len(gen_users) and reuse_u["reused"] >= n_users - len(gen_users) > 0
    print(f"day 2 profiles regenerated: items {sorted(new_items)} ({len(new_items)}); users {len(gen_users)} "
          f"(>= {len(must)} re-split reviewers, <= {len(may)} possibly affected) of {n_users}")

    # Warm start: the id space is unchanged (all day-2 reviewers and products existed on day 1), so
    # day 2 starts from day 1's promoted model.
    assert r2["warm_start_from"] == run1["stages"]["train"]["uri"], r2
    assert "old ids keep their index" in r2["warm_start_reason"]
    tm = ArtifactStore(run2["stages"]["train"]["uri"]).read_json("_MANIFEST.json")
    assert tm["extra"]["warm_started"] is True and tm["config"]["train"]["warm_start_from"] == r2["warm_start_from"]
    # Promotion within tolerance, with the reason recorded in LATEST and STATE.json.
    assert r2["action"] == "promoted", r2
    latest2 = get_latest(store, "beauty")
    assert latest2["run_id"] == r2["run_id"] and "tolerance 0.02" in latest2["reason"]
    state2 = store.read_json("beauty", "nightly", "STATE.json")
    assert state2["promoted"] is True and state2["reason"] == r2["reason"] and state2["run_id"] == r2["run_id"]

    # ---- day 3 with a useless model (an untrained, ID-only BPR: one epoch at lr 1e-7, so the
    # profile/feature/graph stages it would ignore are not selected): not promoted
    _write_day(inbox, "2017-09-08.json", day3)
    worse = load_config(cfg_path, overrides=["train.model=bpr", "train.epochs=1", "train.lr=1e-7",
                                             "stages=etl,train,evaluate"])
    r3 = run_nightly(worse, ncfg)
    assert r3["action"] == "kept", r3
    assert "worse than current" in r3["reason"]
    assert get_latest(store, "beauty")["run_id"] == r2["run_id"]  # latest unchanged
    state3 = store.read_json("beauty", "nightly", "STATE.json")
    assert state3["promoted"] is False and state3["reason"] == r3["reason"] and state3["run_id"] == r3["run_id"]
    # The nightly asked for a warm start (same id space) but day 2's blast weights cannot start a
    # bpr model: the train stage fell back to a fresh initialisation and said why.
    run3 = load_run(store, "beauty", r3["run_id"])
    tm3 = ArtifactStore(run3["stages"]["train"]["uri"]).read_json("_MANIFEST.json")
    assert r3["warm_start_from"] == run2["stages"]["train"]["uri"]
    assert tm3["extra"]["warm_started"] is False and "model differs" in tm3["extra"]["warm_start_reason"]
    print(f"nightly: day 1 {t1:.0f}s; valid recall@20 day1 {r1['metrics']['valid.recall@20']:.4f}, "
          f"day2 {r2['metrics']['valid.recall@20']:.4f}, day3 (bpr untrained) {r3['metrics']['valid.recall@20']:.4f}; "
          f"total {time.time() - t0:.0f}s")


# ---- a day that brings new users AND new items: the append-only id dictionary lets it warm start --
# 2017-08-29 (day 17408 since the epoch) holds reviews of 2 reviewers and 2 products never seen before.
DAY_NEW = 17408


def test_nightly_warm_starts_when_day_two_brings_new_users_and_items(dataset, tmp_path):
    """Day 1: the All_Beauty_5 backlog before DAY_NEW, trained from scratch and promoted. Day 2:
    DAY_NEW's reviews (new users and items). The day-2 ETL extends day 1's id dictionary, the nightly
    warm starts, old embedding rows start from the promoted model and the new rows from the
    initialisation of a cold run (ETL + an ID-only LightGCN: the other stages add nothing here)."""
    import torch

    from blast_ray.config import TrainConfig
    from blast_ray.models.factory import build_model
    from blast_ray.train.artifacts import load_history, load_model_uri
    from blast_ray.train.warm_start import load_warm_start

    t0 = time.time()
    rows = _beauty_days(dataset)
    day1, day2 = rows[rows.day < DAY_NEW], rows[rows.day == DAY_NEW]
    new_users = sorted(set(day2.reviewerID) - set(day1.reviewerID))
    new_items = sorted(set(day2.asin) - set(day1.asin))
    assert new_users and new_items  # facts of the file: day 2 really brings both
    inbox, store_dir = tmp_path / "inbox", tmp_path / "store"
    inbox.mkdir()
    _write_day(inbox, "2017-08-28.json", day1)
    cfg_path = _nightly_config(tmp_path / "beauty.yaml", inbox / "2017-08-28.json", store_dir)
    over = ["stages=etl,train", "train.model=lightgcn", "train.epochs=2", "train.patience=2", "train.embedding_dim=16"]
    ncfg = NightlyConfig(str(inbox), work_dir=str(tmp_path / "work"), tolerance=1.0)
    store = ArtifactStore(str(store_dir))

    r1 = run_nightly(load_config(cfg_path, overrides=over), ncfg)
    assert r1["action"] == "promoted" and r1["warm_start_from"] is None, r1
    run1 = load_run(store, "beauty", r1["run_id"])

    _write_day(inbox, "2017-08-29.json", day2)
    r2 = run_nightly(load_config(cfg_path, overrides=over), ncfg)
    run2 = load_run(store, "beauty", r2["run_id"])
    etl1, etl2 = (ArtifactStore(r["stages"]["etl"]["uri"]) for r in (run1, run2))
    em2 = etl2.read_json("_MANIFEST.json")
    assert em2["config"]["etl"]["id_dictionary_from"] == run1["stages"]["etl"]["uri"]
    n1 = {t: etl1.read_table(t).num_rows for t in ("users", "items")}
    n2 = {t: etl2.read_table(t).num_rows for t in ("users", "items")}
    assert n2 == {"users": n1["users"] + len(new_users), "items": n1["items"] + len(new_items)}
    assert em2["extra"]["id_dictionary"]["users"]["new"] == len(new_users)
    # the new raw ids got the appended indices, in sorted order
    u2 = etl2.read_table("users").to_pandas()
    assert list(u2.set_index("user_id").loc[new_users, "user_idx"]) == list(range(n1["users"], n2["users"]))

    # the nightly warm started (no refusal for the changed counts)
    assert r2["warm_start_from"] == run1["stages"]["train"]["uri"], r2
    assert "old ids keep their index" in r2["warm_start_reason"]
    tm = ArtifactStore(run2["stages"]["train"]["uri"]).read_json("_MANIFEST.json")
    assert tm["extra"]["warm_started"] is True, tm["extra"]
    assert tm["extra"]["warm_start_new_rows"] == {"users": len(new_users), "items": len(new_items)}

    # The initial weights the stage used: old rows = the promoted model's, new rows = a cold run's init
    cfg2 = load_config(cfg_path, overrides=over).train.model_copy(update={"warm_start_from": r2["warm_start_from"]})
    promoted = load_model_uri(run1["stages"]["train"]["uri"])["state_dict"]
    from blast_ray.etl.artifacts import load_interactions
    from blast_ray.store import StageOutput
    from blast_ray.train.inputs import TrainInputs
    from blast_ray.train.stage import fresh_model

    data = load_interactions(StageOutput.committed(store, "beauty", "etl", run2["stages"]["etl"]["fingerprint"]))
    ws = load_warm_start(r2["warm_start_from"], fresh_model(cfg2, TrainInputs(data)), "lightgcn", data.n_users, data.n_items)
    torch.manual_seed(cfg2.seed)  # what train_loop does before it builds a cold model
    cold = build_model(TrainConfig(**{**cfg2.model_dump(), "warm_start_from": None}), data.n_users, data.n_items).state_dict()
    for name, n_old, n_new in (("user_emb", n1["users"], n2["users"]), ("item_emb", n1["items"], n2["items"])):
        init = ws.state_dict[name]
        assert init.shape[0] == n_new
        assert torch.equal(init[:n_old], promoted[name])
        assert torch.equal(init[n_old:], cold[name][n_old:])
        assert not torch.equal(init[:n_old], cold[name][:n_old])
    # and training started from there: the first warm epoch's loss is below the cold first epoch's
    h1, h2 = (load_history(StageOutput.committed(store, "beauty", "train", r["stages"]["train"]["fingerprint"]))
              for r in (run1, run2))
    assert h2.loss.iloc[0] < h1.loss.iloc[0]
    print(f"nightly new ids: +{len(new_users)} users, +{len(new_items)} items; warm first-epoch loss "
          f"{h2.loss.iloc[0]:.4f} vs cold {h1.loss.iloc[0]:.4f}; {time.time() - t0:.0f}s")
