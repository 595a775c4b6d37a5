"""The evaluate stage's same-split baselines, the console metrics table and the report's
metrics/augmentation sections, on the real MovieLens-100k (etl -> train -> evaluate -> report)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from blast_ray.augment.stage import spread_summary
from blast_ray.config import load_config
from blast_ray.pipeline import run_pipeline
from blast_ray.report.console import format_metrics_table, summary_columns
from blast_ray.report.stage import _augment_section
from blast_ray.store import ArtifactStore
from jobs.smoke import smoke_config


def _popularity_recall20(inter: pd.DataFrame) -> tuple[float, float]:
    """Independent popularity Recall@20 on valid (train masked) and test (train+valid masked)."""
    train = inter[inter.split == "train"]
    pop = train.groupby("item_idx").size()
    n_items = int(inter.item_idx.max()) + 1
    score = np.zeros(n_items)
    score[pop.index.to_numpy()] = pop.to_numpy()
    order = np.lexsort((np.arange(n_items), -score))  # ties: lower idx first (torch.topk is not specified, see below)
    out = []
    for split, masked in (("valid", {"train"}), ("test", {"train", "valid"})):
        seen = inter[inter.split.isin(masked)].groupby("user_idx").item_idx.apply(set)
        target = inter[inter.split == split].groupby("user_idx").item_idx.apply(set)
        recalls = []
        for u, items in target.items():
            s = seen.get(u, set())
            top = [i for i in order[: 20 + len(s)] if i not in s][:20]
            recalls.append(len(items.intersection(top)) / len(items))
        out.append(float(np.mean(recalls)))
    return out[0], out[1]


def test_baselines_console_table_and_report(data_dir, ml100k_store, tmp_path):
    cfg = load_config(smoke_config(data_dir, str(ml100k_store), tmp_path / "cfg.yaml", epochs=3,
                                   train={"model": "lightgcn"}, evaluate={"baselines": ["pop", "bpr", "lightgcn"]}))
    res = run_pipeline(cfg, stages=("etl", "train", "evaluate", "report"))
    assert res.ok, res.error
    assert res.status["etl"] == "skipped"  # the session's committed ETL output, by manifest
    ev = res.manifests["evaluate"]["extra"]
    # lightgcn is this run's model: not trained a second time as a baseline.
    assert set(ev["baselines"]) == {"pop", "bpr"}
    store = ArtifactStore(cfg.store)
    etl = res.manifests["etl"]
    inter = pq.read_table(store.path("ml-100k", "stages", "etl", etl["fingerprint"], "interactions"),
                          filesystem=store.fs).to_pandas()
    valid_pop, test_pop = _popularity_recall20(inter)
    # Ties in popularity may be broken differently by torch.topk: allow that, nothing more.
    assert ev["baselines"]["pop"]["valid.recall@20"] == pytest.approx(valid_pop, abs=2e-3)
    assert ev["baselines"]["pop"]["test.recall@20"] == pytest.approx(test_pop, abs=2e-3)
    # A trained model beats popularity on valid after 3 epochs? Not guaranteed: only check it is sane.
    assert 0 < ev["baselines"]["bpr"]["valid.recall@20"] < 1
    base = pq.read_table(store.path("ml-100k", "stages", "evaluate", res.manifests["evaluate"]["fingerprint"],
                                    "baselines.parquet"), filesystem=store.fs).to_pandas()
    assert set(base.model) == {"pop", "bpr"} and set(base.split) == {"valid", "test"}

    cols = summary_columns("lightgcn", res.metrics(), ev["baselines"])
    assert list(cols) == ["lightgcn valid", "lightgcn test", "pop test", "bpr test"]
    tested = tuple(c for c in cols if c.endswith(" test"))
    table = format_metrics_table(cols, mark_best=tested)
    lines = table.splitlines()
    assert lines[0].split()[0] == "metric" and len(lines) == 2 + 16 + 1  # 4 metrics x 4 cutoffs + the legend
    row = next(line for line in lines if line.startswith("recall@20 "))
    cells = row.split()[1:]
    assert float(cells[2].rstrip("*")) == pytest.approx(ev["baselines"]["pop"]["test.recall@20"], abs=5e-5)
    tests = {"lightgcn": res.metrics()["test.recall@20"], **{b: ev["baselines"][b]["test.recall@20"] for b in ("pop", "bpr")}}
    assert [c.endswith("*") for c in cells[1:]] == [m == max(tests, key=tests.get) for m in ("lightgcn", "pop", "bpr")]
    assert not cells[0].endswith("*")  # the valid column is not compared

    html = store.read_text("ml-100k", "runs", res.run_id, "report.html")
    # metrics as rows, models as columns; the best of each row marked, the diff to the best baseline last
    header = "<tr><th class=txt>metric</th><th>lightgcn (this run)</th><th>pop (baseline)</th><th>bpr (baseline)</th><th>vs best baseline</th></tr>"
    assert header in html
    row = html[html.index("<td class=txt>test.recall@20</td>"):].split("</tr>", 1)[0]
    vals = {"lightgcn": res.metrics()["test.recall@20"], **{b: ev["baselines"][b]["test.recall@20"] for b in ("pop", "bpr")}}
    best = max(vals, key=vals.get)
    cells = row.split("<td")[2:5]
    assert [("title=best" in c) for c in cells] == [m == best for m in ("lightgcn", "pop", "bpr")], row
    top_base = max(vals["pop"], vals["bpr"])
    assert f"{(vals['lightgcn'] - top_base) / top_base:+.1%}" in row
    # every trained model's curve, its chosen epoch marked; every scored model in the quartile tables
    from blast_ray.evaluate import artifacts as ev_artifacts

    curves_at = html.index(">Training curves</h2>")
    curves = html[curves_at:html.index("<h2", curves_at + 10)]
    assert "lightgcn (this run): training loss" in curves and "bpr (baseline): training loss" in curves
    assert "bpr (baseline): validation Recall/NDCG" in curves and "pop (baseline): training" not in curves
    assert curves.count("chosen epoch") >= 4  # loss + validation chart of each trained model
    quart_at = html.index(">Results by user activity</h2>")
    quart = html[quart_at:html.index("<h2", quart_at + 10)]
    for name in ("lightgcn (this run)", "pop", "bpr"):
        assert f"<th>{name}</th>" in quart, name
    assert "Test recall@20" in quart and "Test ndcg@20" in quart and "title=best" in quart
    from blast_ray.store import StageOutput

    ev_stage = StageOutput.committed(store, "ml-100k", "evaluate", res.manifests["evaluate"]["fingerprint"])
    per_user = ev_artifacts.load_per_user(ev_stage)
    assert set(per_user) == {"lightgcn", "pop", "bpr"}
    for name, flat in (("lightgcn", res.metrics()), *((b, ev["baselines"][b]) for b in ("pop", "bpr"))):
        assert per_user[name][1]["recall@20"].mean() == pytest.approx(flat["test.recall@20"], rel=1e-6), name
    hist = ev_artifacts.load_baseline_history(ev_stage)
    assert set(hist) == {"bpr"} and len(hist["bpr"]["history"]) == 3 and 0 <= hist["bpr"]["chosen_epoch"] <= 2

    # `blast recommend` alone: without the committed upstream outputs it fails naming what it lacks;
    # with them (what the CLI does) it reads the committed etl + train and writes top-K per user.
    alone = run_pipeline(cfg, stages=("recommend",))
    assert not alone.ok and "needs the output of 'etl'" in alone.error
    rec = run_pipeline(cfg, stages=("recommend",), use_committed_upstream=True)
    assert rec.ok, rec.error
    assert rec.status["etl"] == "not-selected" and rec.status["recommend"] == "ran"
    top = pq.read_table(store.path("ml-100k", "stages", "recommend", rec.manifests["recommend"]["fingerprint"],
                                   "recommendations"), filesystem=store.fs).to_pandas()
    n_users = int(inter.user_idx.max()) + 1
    assert len(top) == 20 * n_users and top.user_idx.nunique() == n_users
    seen = set(zip(inter.user_idx, inter.item_idx))
    assert not any((u, i) in seen for u, i in zip(top.user_idx, top.item_idx))
    # Raw ids and titles, joined in by the stage: every row matches the ETL users/items tables.
    etl_parts = ("ml-100k", "stages", "etl", etl["fingerprint"])
    users = pq.read_table(store.path(*etl_parts, "users"), filesystem=store.fs).to_pandas()
    items = pq.read_table(store.path(*etl_parts, "items"), filesystem=store.fs).to_pandas()
    assert list(top.columns[:5]) == ["user_id", "rank", "item_id", "score", "title"]
    want_user = top.user_idx.map(users.set_index("user_idx").user_id)
    want_item = top.item_idx.map(items.set_index("item_idx").item_id)
    want_title = top.item_idx.map(items.set_index("item_idx").title)
    assert (top.user_id == want_user).all() and (top.item_id == want_item).all()
    assert top.title.notna().all() and (top.title == want_title).all()  # ml-100k has a title for every movie
    extra = rec.manifests["recommend"]["extra"]
    assert extra["users_without_raw_id"] == 0 and extra["items_without_raw_id"] == 0 and extra["items_without_title"] == 0
    ranks = top.sort_values(["user_idx", "rank"]).groupby("user_idx")["rank"].apply(list)
    assert all(r == list(range(1, 21)) for r in ranks)
    assert (top.sort_values(["user_idx", "rank"]).groupby("user_idx").score.diff().dropna() <= 1e-6).all()
    # `blast recommend --user RAW_ID`: one user's list with titles, straight from that Parquet.
    from blast_ray.cli import UsageError, user_recommendations

    raw = str(users.user_id.iloc[7])
    mine = user_recommendations(cfg, raw, top=10)
    expect = top[top.user_id == raw].sort_values("rank").head(10)
    assert mine["item_id"].tolist() == expect.item_id.tolist() and mine["title"].tolist() == expect.title.tolist()
    assert mine["rank"].tolist() == list(range(1, 11))
    with pytest.raises(UsageError, match="no such user"):
        user_recommendations(cfg, "no-such-user")


def test_augment_section_shows_spread_over_activity_and_popularity(dataset):
    """The report's augmentation summary renders the quartile spread the augment stage records."""
    df = pd.read_csv(dataset("movielens-100k") / "ml-100k.inter", sep="\t")
    users = df["user_id:token"].astype("category").cat.codes.to_numpy()
    items = df["item_id:token"].astype("category").cat.codes.to_numpy()
    R = sp.csr_matrix((np.ones(len(df)), (users, items)))
    rng = np.random.default_rng(0)
    h_u = rng.integers(0, R.shape[0], 500)
    h_i = rng.integers(0, R.shape[1], 500)
    spread = spread_summary(h_u, h_i, R)
    assert sum(spread["users"]["pairs"]) == 500 and sum(spread["items"]["population"]) == R.shape[1]

    class Ctx:
        results = {"augment": {"row_counts": {"augmented_pairs": 500}, "extra": {"enabled": True, "q": 500, "spread": spread}}}

    html = _augment_section(Ctx())
    assert "Augmented pairs by user activity" in html and "Augmented pairs by item popularity" in html
    assert "Q1 (lowest)" in html and "share of pairs" in html
    for n in spread["users"]["pairs"]:
        assert f"<td>{n}</td>" in html or f"<td>{n:,}</td>" in html


# ---- the epoch cap (train manifest extra.epoch_cap) ------------------------------------------
def _train_manifest(still_improving: bool, hit: bool = True) -> dict:
    return {"fingerprint": "f00d", "timings": {"total_s": 12.0},
            "extra": {"metrics": {"valid.recall@20": 0.31, "test.recall@20": 0.30},
                      "epoch_cap": {"hit": hit, "still_improving": still_improving, "best_epoch": 59, "epochs_run": 60}}}


def _report_for(train_manifest: dict) -> str:
    from types import SimpleNamespace

    from blast_ray.report.stage import build_report

    ctx = SimpleNamespace(outputs={}, results={"train": train_manifest}, dataset="ml-100k", run_id="r1",
                          cfg=None, store=SimpleNamespace(root="/nowhere"))
    return build_report(ctx)


def test_epoch_cap_still_improving_is_warned_in_report_and_console(capsys):
    from blast_ray.config import config_from_dict
    from blast_ray.pipeline import PipelineResult
    from blast_ray.report.console import epoch_cap_warning, print_summary

    msg = "while validation was still improving: raise train.epochs"
    doc = _report_for(_train_manifest(still_improving=True))
    assert 'class="warn"' in doc and msg in doc and "60 epochs run, best validation epoch 59" in doc
    # hit, but validation had already peaked: a plain note, no warning
    calm = _report_for(_train_manifest(still_improving=False))
    assert 'class="warn"' not in calm and msg not in calm and "Reached the epoch cap" in calm
    # no epoch_cap entry (an older train manifest): nothing
    old = _report_for({"extra": {"metrics": {}}})
    assert 'class="warn"' not in old and "epoch cap" not in old
    assert epoch_cap_warning(None) is None and epoch_cap_warning({"epoch_cap": "junk"}) is None

    cfg = config_from_dict({"dataset": {"name": "ml-100k", "format": "movielens_atomic", "paths": {"inter": "x"}},
                            "store": "/nowhere"})
    for still, expected in ((True, True), (False, False)):
        res = PipelineResult("r1", {"train": "ran"}, {"train": _train_manifest(still)})
        print_summary(cfg, res)
        out = capsys.readouterr().out
        assert (f"WARNING: train: stopped at the epoch cap" in out) is expected and ("recall@20" in out)


def test_baseline_verdict_wins_ties_and_losses():
    """The console's one verdict line: a win, a tie at 4 decimals (not called a win), a loss."""
    import doctest

    from blast_ray.report import console

    assert doctest.testmod(console, raise_on_error=False).failed == 0
    v = console.baseline_verdict
    b = {"lightgcn": {"test.recall@20": 0.3783}, "pop": {"test.recall@20": 0.19}}
    assert v("blast", {"test.recall@20": 0.3783}, b).startswith("blast ties the best baseline")
    assert v("blast", {"test.recall@20": 0.3790}, b).startswith("blast beats every baseline")
    assert v("blast", {"test.recall@20": 0.3700}, b).startswith("a baseline wins: lightgcn")


def test_console_baseline_columns_follow_the_config_order_fresh_or_reused(capsys):
    """A fresh evaluate output lists its baselines as trained, a reused one as stored (sorted keys):
    the console table shows them in evaluate.baselines' order either way (seen: ``make run`` from
    an empty store printed pop, bpr, lightgcn, freedom; the same run reused, bpr, freedom, lightgcn, pop)."""
    from blast_ray.config import config_from_dict
    from blast_ray.pipeline import PipelineResult
    from blast_ray.report.console import print_summary

    cfg = config_from_dict({"dataset": {"name": "ml-100k", "format": "movielens_atomic", "paths": {"inter": "x"}},
                            "store": "/nowhere", "evaluate": {"baselines": ["pop", "bpr", "lightgcn", "freedom"]}})
    scores = {"pop": 0.19, "bpr": 0.36, "lightgcn": 0.378, "freedom": 0.3786}
    heads = []
    for names in (["pop", "bpr", "lightgcn", "freedom"], sorted(scores)):
        ev = {"extra": {"metrics": {"valid.recall@20": 0.35, "test.recall@20": 0.3786},
                        "baselines": {n: {"test.recall@20": scores[n]} for n in names}}}
        print_summary(cfg, PipelineResult("r1", {"evaluate": "ran"}, {"evaluate": ev}))
        out = capsys.readouterr().out
        heads.append(next(line for line in out.splitlines() if line.startswith("metric ")).split())
    assert heads[0] == heads[1] == ["metric", "blast", "valid", "blast", "test", "pop", "test", "bpr", "test",
                                     "lightgcn", "test", "freedom", "test"]
