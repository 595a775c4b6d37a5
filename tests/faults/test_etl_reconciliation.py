"""Fault: a raw dump with broken, duplicated and sparse lines. ETL reconciliation where EVERY
expected figure is computed here, line by line in plain Python (``json`` + dicts), from the raw
file and the documented rules (docs/stages/etl.md: reject reasons, latest duplicate wins, k-core,
per-user split sizes), never from the ETL's own figures.

The raw file is built from real data: the whole Amazon 2018 All_Beauty 5-core dump, the 24-line
broken-lines fixture (tests/fixtures/etl/broken_reviews_2018.json) in front, and damaged copies of
real lines (cut in half, a field dropped, a rating of 7, a fractional time, an id with a space,
later re-reviews, a verbatim repeat) spread through it.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "etl" / "broken_reviews_2018.json"
KCORE = 5
ONE_TOKEN = re.compile(r"[^\s\"'\[\]{}()<>]+")  # an id: one token, no whitespace, quotes or brackets


def _damaged_copies(real: list[bytes]) -> list[tuple[int, bytes]]:
    """(position in the real lines, injected line) pairs, each derived from a real line."""
    def obj(k: int) -> dict:
        return json.loads(real[k])

    def dumps(o: dict) -> bytes:
        return json.dumps(o).encode()

    later = obj(100) | {"unixReviewTime": obj(100)["unixReviewTime"] + 86400, "overall": 1.0}
    no_asin = {k: v for k, v in obj(200).items() if k != "asin"}
    return [
        (50, real[50][: len(real[50]) // 2]),                               # cut in half
        (300, dumps(no_asin)),                                             # item id missing
        (400, dumps(obj(400) | {"overall": 7.0})),                          # rating out of range
        (500, dumps(obj(500) | {"unixReviewTime": 1400000000.5})),          # fractional time
        (600, dumps(obj(600) | {"reviewerID": obj(600)["reviewerID"] + " x"})),  # id with a space
        (700, dumps(later)),                                               # a later re-review of line 100
        (800, real[800]),                                                  # a verbatim repeat (tie: later line)
        (900, b"   "),                                                     # blank
        (1000, dumps(obj(1000) | {"overall": "4 stars"})),                  # rating not a number
        (1100, dumps({k: v for k, v in obj(1100).items() if k != "reviewerID"} | {"reviewerID": None})),  # null user id
    ]


def _classify(raw: bytes) -> tuple[str | None, dict | None]:
    """(reject reason or None, parsed record) by the documented rules, independent of the ETL."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bad_encoding", None
    if not text.strip():
        return "empty_line", None
    try:
        o = json.loads(text)
    except ValueError:
        return "malformed_json", None
    if not isinstance(o, dict):
        return "not_a_json_object", None
    for key, what in (("reviewerID", "user"), ("asin", "item")):
        v = o.get(key)
        if v is None or v == "":
            return f"missing_{what}_id", None
        if not isinstance(v, str) or not ONE_TOKEN.fullmatch(v):
            return f"bad_{what}_id", None
    r = o.get("overall")
    if r is not None:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or math.isnan(r):
            return "bad_rating", None
        if not 1 <= r <= 5:
            return "rating_out_of_range", None
    t = o.get("unixReviewTime")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0 or t != int(t)):
        return "bad_timestamp", None
    return None, o


def _kcore(pairs: set[tuple[str, str]], k: int) -> set[tuple[str, str]]:
    while True:
        uc = Counter(u for u, _ in pairs)
        ic = Counter(i for _, i in pairs)
        kept = {(u, i) for u, i in pairs if uc[u] >= k and ic[i] >= k}
        if kept == pairs:
            return kept
        pairs = kept


def _split_sizes(n: int) -> tuple[int, int, int]:
    if n >= 10:
        v = t = math.floor(n * 0.1)
        return n - v - t, v, t
    if n >= 3:
        return n - 2, 1, 1
    return n, 0, 0


@pytest.mark.faults
def test_etl_reconciles_with_counts_computed_from_the_raw_file(dataset, tmp_path):
    import pyarrow.parquet as pq

    from blast_ray.config import config_from_dict
    from blast_ray.pipeline import run_pipeline

    real = gzip.decompress((dataset("amazon-raw-2018") / "All_Beauty_5.json.gz").read_bytes()).splitlines()
    lines = FIXTURE.read_bytes().splitlines()
    injected = dict(_damaged_copies(real))
    for k, line in enumerate(real):
        lines.append(line)
        if k in injected:
            lines.append(injected[k])
    raw_file = tmp_path / "beauty_broken.json"
    raw_file.write_bytes(b"\n".join(lines) + b"\n")

    # ---- expected, from the raw file alone ----
    rejects: dict[int, str] = {}
    latest: dict[tuple[str, str], tuple[float, int, dict]] = {}  # (u, i) -> (time, line, record)
    n_raw = 0
    for no, raw in enumerate(raw_file.read_bytes().split(b"\n")[:-1], start=1):
        n_raw += 1
        reason, o = _classify(raw)
        if reason:
            rejects[no] = reason
            continue
        key = (o["reviewerID"], o["asin"])
        t = o.get("unixReviewTime")
        rank = (-math.inf if t is None else t, no)  # latest time wins; ties: the later line
        if key not in latest or rank >= latest[key][:2]:
            latest[key] = (*rank, o)
    n_valid = n_raw - len(rejects)
    core = _kcore(set(latest), KCORE)
    per_user = Counter(u for u, _ in core)
    splits = [sum(_split_sizes(n)[j] for n in per_user.values()) for j in range(3)]
    assert len(set(rejects.values())) >= 9 and n_valid - len(latest) >= 3 and len(latest) - len(core) >= 5

    # ---- the ETL stage, through the pipeline (manifest + rejects/ output) ----
    cfg = config_from_dict({
        "dataset": {"name": "beauty-broken", "format": "amazon2018", "paths": {"reviews": str(raw_file)}},
        "store": str(tmp_path / "store"),
        "etl": {"kcore": KCORE, "master": "local[2]", "driver_memory": "2g", "shuffle_partitions": 2},
    })
    res = run_pipeline(cfg, stages=("etl",))
    assert res.ok, res.error
    m = res.manifests["etl"]
    rc = m["row_counts"]
    out = tmp_path / "store" / "beauty-broken" / "stages" / "etl" / m["fingerprint"]

    assert rc["raw_records"] == n_raw
    assert rc["rejected"] == len(rejects)
    for reason, n in Counter(rejects.values()).items():
        assert rc[f"rejected_{reason}"] == n, reason
    assert sum(v for k, v in rc.items() if k.startswith("rejected_")) == len(rejects)
    assert rc["collapsed_duplicates"] == n_valid - len(latest)
    assert rc["removed_by_kcore"] == len(latest) - len(core)
    assert (rc["interactions"], rc["users"], rc["items"]) == (len(core), len(per_user), len({i for _, i in core}))
    assert [rc["split_train"], rc["split_valid"], rc["split_test"]] == splits

    rej = pq.read_table(out / "rejects").to_pandas()
    assert dict(zip(rej["line"].astype(int), rej["reason"])) == rejects
    assert set(rej["source"]) == {raw_file.name}
    text_of = {no: raw.decode("utf-8", "replace") for no, raw in enumerate(raw_file.read_bytes().split(b"\n"), 1)}
    assert all(text_of[int(n)] == r for n, r in zip(rej["line"], rej["raw"]) if rejects[int(n)] != "bad_encoding")

    inter = pq.read_table(out / "interactions").to_pandas()
    users = pq.read_table(out / "users").to_pandas().set_index("user_idx")["user_id"]
    items = pq.read_table(out / "items").to_pandas().set_index("item_idx")["item_id"]
    got = {(users[u], items[i]): (r, t) for u, i, r, t in zip(inter.user_idx, inter.item_idx, inter.rating, inter.timestamp)}
    assert set(got) == core and len(inter) == len(core)
    for key in core:  # the kept duplicate is the latest one: its rating and time
        o = latest[key][2]
        assert got[key] == (o.get("overall"), o.get("unixReviewTime")), key
