"""benchmarks/synth_amazon.py: deterministic per seed, the published 2018 schema, stated noise."""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _synth():
    spec = importlib.util.spec_from_file_location("synth_amazon", ROOT / "benchmarks" / "synth_amazon.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt") as f:
        return f.read().splitlines()


def test_synthetic_dump_is_deterministic_and_well_formed(tmp_path, data_dir):
    synth = _synth()
    a = synth.main(["--reviews", "20k", "--out", str(tmp_path / "a"), "--seed", "5", "--data-dir", str(data_dir)])
    b = synth.main(["--reviews", "20k", "--out", str(tmp_path / "b"), "--seed", "5", "--data-dir", str(data_dir)])
    c = synth.main(["--reviews", "20k", "--out", str(tmp_path / "c"), "--seed", "6", "--data-dir", str(data_dir)])
    ra, rb, rc = (_lines(tmp_path / d / a["files"]["reviews"]) for d in "abc")
    assert ra == rb and ra != rc
    assert _lines(tmp_path / "a" / a["files"]["meta"]) == _lines(tmp_path / "b" / b["files"]["meta"])

    parsed, bad = [], 0
    for line in ra:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    assert bad == a["malformed_lines"] and 0 < bad < 0.005 * len(ra)
    dups = sum(n - 1 for n in Counter(ra).values() if n > 1)
    assert dups >= a["duplicate_lines"] > 0  # stated duplicates (+ identical draws, rare)
    assert len(parsed) + bad == len(ra) == a["review_lines"]
    assert len(parsed) == 20_000 - bad + a["duplicate_lines"]
    keys = {"overall", "verified", "reviewTime", "reviewerID", "asin", "reviewerName", "reviewText",
            "summary", "unixReviewTime"}
    assert all(keys <= r.keys() for r in parsed)

    meta = [json.loads(x) for x in _lines(tmp_path / "a" / a["files"]["meta"])]
    asins = {m["asin"] for m in meta}
    assert len(asins) == len(meta) == a["items"]
    assert {r["asin"] for r in parsed} <= asins
    assert len({r["reviewerID"] for r in parsed}) <= a["users"]
    assert all(len(m["category"]) == 3 and m["title"] and m["brand"] for m in meta)

    # heavy tails as fitted: user activity >= 5 by construction, item popularity skewed
    users = Counter(r["reviewerID"] for r in parsed)
    assert np.median(list(users.values())) >= 5
    pop = np.sort(np.fromiter(Counter(r["asin"] for r in parsed).values(), dtype=float))[::-1]
    assert pop[: len(pop) // 10].sum() > 0.3 * pop.sum()
    assert 1.5 < a["alpha_users"] < 5 and 1.5 < a["alpha_items"] < 5
