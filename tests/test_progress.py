"""The shared progress helper (blast_ray/progress.py): off a terminal, one INFO line per interval
and a last one when the step outlived an interval; the env knob; rows counted through a real Ray
Data pipeline and real Ray tasks, results unchanged and in order."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from blast_ray.progress import INTERVAL_ENV, Progress, collect_pandas, get_in_order, interval_from_env


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_at_most_once_per_interval_and_a_final_one(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="blast_ray.progress")
    p = Progress("profiles: user", total=4_400, unit="rows", terminal=False, interval_s=30, clock=clock)
    for step in range(44):  # 100 rows every 2 s: 88 s in all
        clock.now += 2
        p.update(100)
    clock.now += 1
    p.close()
    p.close()  # twice: still one final line
    lines = [r.getMessage() for r in caplog.records if r.name == "blast_ray.progress"]
    assert lines == ["profiles: user: 1,500/4,400 rows (34%), 30 s", "profiles: user: 3,000/4,400 rows (68%), 60 s",
                     "profiles: user: 4,400/4,400 rows (100%), 89 s"]
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_a_short_step_is_silent_and_unknown_totals_print_counts(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="blast_ray.progress")
    with Progress("graphs: kNN", total=10, terminal=False, interval_s=30, clock=clock) as p:
        clock.now += 5
        p.update(10)
    assert not caplog.records
    q = Progress("profiles: vllm attempt 1", total=None, terminal=False, interval_s=1, clock=clock)
    clock.now += 2
    q.update(7)
    assert q.line() == "profiles: vllm attempt 1: 7 rows, 2 s"


def test_interval_env_knob(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert interval_from_env() == 30.0
    monkeypatch.setenv(INTERVAL_ENV, "0.5")
    assert interval_from_env() == 0.5 and Progress("x", 1, terminal=False)._interval == 0.5
    for bad in ("0", "-3", "soon"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=INTERVAL_ENV):
            interval_from_env()


def test_a_terminal_gets_a_bar_not_lines(caplog, capsys):
    caplog.set_level(logging.INFO, logger="blast_ray.progress")
    with Progress("features: text", total=3, terminal=True, interval_s=0) as p:
        p.update(3)
    assert not caplog.records and "features: text" in capsys.readouterr().err


def test_real_ray_data_rows_and_tasks_are_counted(caplog, dataset, monkeypatch):
    """Real MovieLens-100k rows through Ray Data and real Ray tasks, a line per update (interval 0
    through the env knob, as an operator would set it)."""
    from blast_ray.runtime import ensure_ray

    monkeypatch.setenv(INTERVAL_ENV, "1e-9")
    caplog.set_level(logging.INFO, logger="blast_ray.progress")
    df = pd.read_csv(dataset("movielens-100k") / "ml-100k.inter", sep="\t").head(3_000)
    ray = ensure_ray()
    ds = ray.data.from_pandas(df).repartition(6).map_batches(lambda b: b.assign(twice=b["rating:float"] * 2),
                                                            batch_format="pandas")
    got = collect_pandas(ds, Progress("features: text", len(df), "rows", terminal=False))
    assert len(got) == len(df) and (got["twice"] == 2 * got["rating:float"]).all()
    keys = ["user_id:token", "item_id:token"]
    # the very frame Ray Data's to_pandas gives (dtypes included), and the input rows
    pd.testing.assert_frame_equal(got.sort_values(keys).reset_index(drop=True),
                                  ds.to_pandas().sort_values(keys).reset_index(drop=True))
    pd.testing.assert_frame_equal(got.sort_values(keys).reset_index(drop=True)[df.columns],
                                  df.sort_values(keys).reset_index(drop=True), check_dtype=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "blast_ray.progress"]
    assert len(lines) >= 2 and lines[-1].startswith("features: text: 3,000/3,000 rows (100%)")
    counts = [int(line.split(": ")[2].split("/")[0].replace(",", "")) for line in lines]
    assert counts == sorted(counts)

    caplog.clear()
    square = ray.remote(lambda a, b: np.arange(a, b) ** 2)
    ranges = [(0, 5), (5, 50), (50, 51)]
    parts = get_in_order(ray, [square.remote(a, b) for a, b in ranges], [b - a for a, b in ranges],
                         Progress("graphs: kNN", 51, "rows", terminal=False))
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(51) ** 2)
    lines = [r.getMessage() for r in caplog.records if r.name == "blast_ray.progress"]
    assert lines and lines[-1].startswith("graphs: kNN: 51/51 rows (100%)")
