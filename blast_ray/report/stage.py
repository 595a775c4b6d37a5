"""The report stage: write the run's self-contained ``report.html`` into ``<dataset>/runs/<run_id>/``
(``blast_ray.report.artifacts``).

It reads only what this run resolved (``ctx.outputs``) plus, for the baselines table, the other
committed train outputs on the same ETL fingerprint. Any missing piece renders as a "not run"
section; no number is ever made up.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import numpy as np
import yaml

from blast_ray.config import STAGES
from blast_ray.etl import artifacts as etl_artifacts
from blast_ray.report import analysis, artifacts
from blast_ray.report import html as H
from blast_ray.report.console import epoch_cap_warning, in_config_order, metric_order
from blast_ray.store import ArtifactStore, StageOutput, layout

log = logging.getLogger(__name__)
QUARTILE_K = 20  # the cutoff of the per-user results and of the selection metric's default


class _Inputs:
    """What several sections read, loaded once per report (through the stages' artifacts modules)."""

    def __init__(self, ctx):
        self.ctx = ctx

    @functools.cached_property
    def data(self):
        return etl_artifacts.load_interactions(self.ctx.outputs["etl"])

    @functools.cached_property
    def titles(self) -> np.ndarray:
        items = etl_artifacts.load_table(self.ctx.outputs["etl"], etl_artifacts.ITEMS, columns=["item_idx", "title"])
        return etl_artifacts.values_by_index(items, "item_idx", "title", self.data.n_items)

    @functools.cached_property
    def user_ids(self) -> np.ndarray:
        users = etl_artifacts.load_table(self.ctx.outputs["etl"], etl_artifacts.USERS, columns=["user_idx", "user_id"])
        return etl_artifacts.values_by_index(users, "user_idx", "user_id", self.data.n_users)

    @functools.cached_property
    def model(self):
        import torch

        from blast_ray.train import artifacts as train_artifacts

        return tuple(torch.from_numpy(a) for a in train_artifacts.load_embeddings(self.ctx.outputs["train"]))

    def title(self, i: int) -> str:
        t = self.titles[i]
        return t if isinstance(t, str) and t else f"item {i}"


def _dataset_section(ctx) -> str:
    if "etl" not in ctx.outputs:
        return H.not_run("dataset statistics", "the etl stage is not in this run")
    etl: StageOutput = ctx.outputs["etl"]
    t = etl_artifacts.load_table(etl, etl_artifacts.INTERACTIONS, columns=["user_idx", "item_idx", "split"])
    users = t.column("user_idx").to_numpy()
    items = t.column("item_idx").to_numpy()
    split = t.column("split").to_pylist()
    n_u, n_i = int(users.max()) + 1 if users.size else 0, int(items.max()) + 1 if items.size else 0
    per_user = np.bincount(users, minlength=n_u)
    per_item = np.bincount(items, minlength=n_i)
    counts = {s: split.count(s) for s in ("train", "valid", "test")}
    density = users.size / max(n_u * n_i, 1)
    stats = H.table(
        ["statistic", "value"],
        [
            ["users", n_u], ["items", n_i], ["interactions", int(users.size)],
            ["density", float(density)], *[[f"{s} interactions", c] for s, c in counts.items()],
            ["median interactions per user", float(np.median(per_user)) if n_u else 0.0],
            ["median interactions per item", float(np.median(per_item)) if n_i else 0.0],
        ],
    )
    charts = (
        '<div class="charts">'
        + H.histogram_svg(per_user, "user activity (interactions per user)")
        + H.histogram_svg(per_item, "item popularity (interactions per item)")
        + "</div>"
    )
    return stats + charts + _profiles_line(ctx)


def _profiles_line(ctx) -> str:
    """One line on the run's profiles (manifest ``extra``): engine, model and the share that fell
    back to the template (a bounded fault: docs/RELIABILITY.md); empty without a profiles output."""
    m = ctx.results.get("profiles") or {}
    extra, n = m.get("extra") or {}, (m.get("row_counts") or {}).get("profiles")
    if "fallback_rate" not in extra or not n:
        return ""
    return (f'<p>Profiles: engine {H.esc(extra.get("engine", "?"))}, model {H.esc(extra.get("model", "?"))}: '
            f'fallback rate {float(extra["fallback_rate"]):.1%} ({int(extra.get("fallbacks", 0))} of {int(n)} '
            "profiles fell back to the template).</p>")


def _epoch_cap_note(ctx) -> str:
    """A warning when the train stage stopped at the epoch cap while validation still improved
    (train manifest ``extra.epoch_cap``); a muted line when the cap was hit after the best epoch."""
    extra = (ctx.results.get("train") or {}).get("extra") or {}
    text = epoch_cap_warning(extra)
    if text:
        return H.warning(text)
    cap = extra.get("epoch_cap")
    if isinstance(cap, dict) and cap.get("hit"):
        return (f'<p class="muted">Reached the epoch cap ({H.esc(cap.get("epochs_run", "?"))} epochs); validation had '
                f'stopped improving (best epoch {H.esc(cap.get("best_epoch", "?"))}).</p>')
    return ""


def _curves(label: str, df, chosen, sel: str) -> str:
    """A model's loss and validation charts (the selection metric and NDCG at its cutoff), the
    chosen epoch marked."""
    x = df["epoch"].to_numpy() if "epoch" in df else np.arange(len(df))
    cut = sel.split("@", 1)[1] if "@" in sel else "20"
    loss = {c: df[c].to_numpy() for c in df.columns if "loss" in c.lower()}
    # the selection metric and NDCG at its cutoff (every cutoff would be eight lines)
    rank = {c: df[c].to_numpy() for c in df.columns if c in (f"valid.{sel}", f"valid.ndcg@{cut}")}
    rank = rank or {c: df[c].to_numpy() for c in df.columns if any(m in c.lower() for m in ("recall", "ndcg"))}
    out = (H.line_svg(x, loss, f"{label}: training loss", marker_x=chosen) if loss
           else H.not_run(f"{label} loss curve", "no loss column in history"))
    out += (H.line_svg(x, rank, f"{label}: validation Recall/NDCG", marker_x=chosen) if rank
            else H.not_run(f"{label} validation curve", "no metric columns in history"))
    return out


def _history_section(ctx, inp=None) -> str:
    """Training curves of every trained model: this run's (the train output's history) and each
    baseline the evaluate stage trained (its ``baseline_history.parquet``), chosen epoch marked."""
    note = _epoch_cap_note(ctx)
    if "train" not in ctx.outputs:
        return note + H.not_run("training curves", "the train stage is not in this run")
    train: StageOutput = ctx.outputs["train"]
    from blast_ray.train import artifacts as train_artifacts

    if not train_artifacts.has_history(train):
        return H.not_run("training curves", f"the train output has no {train_artifacts.HISTORY_FILE}")
    sel = getattr(getattr(ctx.cfg, "evaluate", None), "select_metric", "recall@20")
    best = ((ctx.results.get("train") or {}).get("metrics") or {}).get("best_epoch")
    if best is None:
        best = ((ctx.results.get("train") or {}).get("extra") or {}).get("metrics", {}).get("best_epoch")
    model = getattr(getattr(ctx.cfg, "train", None), "model", "model")
    charts = [_curves(f"{model} (this run)", train_artifacts.load_history(train), best, sel)]
    curves = {}
    if "evaluate" in ctx.outputs:
        from blast_ray.evaluate import artifacts as ev_artifacts

        curves = ev_artifacts.load_baseline_history(ctx.outputs["evaluate"])
    for name, c in curves.items():
        charts.append(_curves(f"{name} (baseline)", c["history"], c["chosen_epoch"], sel))
    untrained = [n for n in ((ctx.results.get("evaluate") or {}).get("extra") or {}).get("baselines") or {}
                 if n not in curves]
    out = note + ("<p>Every trained model: this run's and the baselines the evaluate stage trained on the same "
                  "split. The dashed line marks the epoch whose weights were kept (best validation "
                  f"{H.esc(sel)}); test figures are those of that epoch."
                  + (f" No curve for {H.esc(', '.join(untrained))} (not trained: a fixed ranking, or an "
                     "evaluate output written before curves were stored)." if untrained else "") + "</p>")
    return out + '<div class="charts">' + "".join(charts) + "</div>"


def find_baselines(store: ArtifactStore, dataset: str, etl_fingerprint: str) -> list[dict[str, Any]]:
    """Committed train manifests (any model) whose ETL input is ``etl_fingerprint``, newest first."""
    found = []
    for out in layout.committed_outputs(store, dataset, "train"):
        if out.inputs.get("etl") == etl_fingerprint:
            found.append(out.manifest)
    return found


def _metrics_section(ctx, inp=None) -> str:
    """Metrics as rows, models as columns: this run's model (valid + test) against the baselines the
    evaluate stage trained on the same split, plus other committed train outputs on the same ETL
    fingerprint (earlier runs). Best per row marked; the last column compares this run's model with
    the best same-split baseline."""
    if "train" not in ctx.outputs or "etl" not in ctx.outputs:
        return H.not_run("final metrics", "no train output in this run")
    this_fp = ctx.outputs["train"].fingerprint
    model = ctx.cfg.train.model
    cols: dict[str, dict] = {}
    ev = ctx.results.get("evaluate") or {}
    main = None
    if (ev.get("extra") or {}).get("metrics") or ev.get("metrics"):
        main = f"{model} (this run)"
        cols[main] = (ev.get("extra") or {}).get("metrics") or ev.get("metrics")
    baselines = []
    order = tuple(getattr(getattr(ctx.cfg, "evaluate", None), "baselines", ()) or ())
    for name, flat in in_config_order((ev.get("extra") or {}).get("baselines") or {}, order).items():
        baselines.append(f"{name} (baseline)")
        cols[baselines[-1]] = flat
    for m in find_baselines(ctx.store, ctx.dataset, ctx.outputs["etl"].fingerprint):
        if m.get("fingerprint") == this_fp and cols:
            continue  # already shown through the evaluate stage
        other = ((m.get("config") or {}).get("train") or {}).get("model", "?")
        tag = f"{other} (this run)" if m.get("fingerprint") == this_fp else f"{other} (run {m.get('fingerprint', '')[:8]})"
        cols[tag] = (m.get("extra") or {}).get("metrics") or {}
        main = main or (tag if m.get("fingerprint") == this_fp else None)
    keys = sorted({k for m in cols.values() for k, v in m.items() if isinstance(v, (int, float)) and k.startswith("test.")},
                  key=lambda k: metric_order(k.split(".", 1)[1]))
    if not keys:
        return H.not_run("final metrics", "the train outputs report no metrics")
    sel = f"valid.{getattr(ctx.cfg.evaluate, 'select_metric', 'recall@20')}"
    if any(sel in m for m in cols.values()):
        keys.insert(0, sel)  # the selection metric, next to the test figures
    note = ("<p>Full ranking over all items (train items masked; test also masks valid). Every model is "
            f"selected on validation {H.esc(sel.split('.', 1)[1])}; test figures are at its best validation epoch. "
            "The best value of each row is highlighted; the last column is this run's model against the best "
            "same-split baseline of that row.</p>")
    return note + H.metrics_matrix(keys, cols, main, baselines)


def _quartile_section(ctx, inp=None) -> str:
    """Test Recall/NDCG@20 per user, averaged within train-activity quartiles, for every model the
    evaluate stage scored (its ``per_user_test.parquet``: this run's model and each baseline). An
    evaluate output without that file: this run's model and popularity, recomputed here from the
    committed embeddings and the train counts with the evaluation's masking rule."""
    if "train" not in ctx.outputs or "etl" not in ctx.outputs:
        return H.not_run("results by user activity", "needs the etl and train outputs")
    inp = inp or _Inputs(ctx)
    data = inp.data
    k = QUARTILE_K
    model = ctx.cfg.train.model
    stored = {}
    if "evaluate" in ctx.outputs:
        from blast_ray.evaluate import artifacts as ev_artifacts

        stored = {m: v for m, v in ev_artifacts.load_per_user(ctx.outputs["evaluate"]).items()
                  if f"recall@{k}" in v[1] and f"ndcg@{k}" in v[1]}
    if stored:
        per_model = {(f"{m} (this run)" if m == model else m): v for m, v in stored.items()}
        source = "every model the evaluate stage scored (same users, same masks as the metrics table)"
    else:
        per_model = {f"{model} (this run)": analysis.per_user_metrics(*inp.model, data, "test", k),
                     "pop": analysis.per_user_metrics(*analysis.popularity_model(data.train), data, "test", k)}
        source = ("this run's model and popularity, recomputed from the embeddings (this evaluate output "
                  "stores no per-user results)")
    users = next(iter(per_model.values()))[0]
    out = ("<p>Test users split into four equal groups by their number of train interactions; mean per-user "
           f"test metrics of each group, for {H.esc(source)}. The best value of each row is highlighted.</p>")
    for metric in (f"recall@{k}", f"ndcg@{k}"):
        cols = {}
        for name, (u, per) in per_model.items():
            if not np.array_equal(u, users):  # same test users for every model; never mix populations
                log.warning("report: %s has per-user results for other users; left out of the quartile table", name)
                continue
            cols[name] = per[metric]
        rows = analysis.quartile_table(data.train, users, cols)
        out += f"<h3>Test {H.esc(metric)}</h3>" + _best_marked_table(["user activity", "train interactions", "users", *cols], rows, 3)
    return out


def _best_marked_table(header: list[str], rows: list[list], first_value: int) -> str:
    """``H.table`` with the highest value of each row (columns from ``first_value`` on) highlighted."""
    marked = []
    for r in rows:
        vals = [v for v in r[first_value:] if isinstance(v, float) and np.isfinite(v)]
        best = max(vals) if len(vals) > 1 else None
        marked.append([*r[:first_value], *[H.Raw(f'<td class=best title=best>{H.fmt(v)}</td>') if best is not None and v == best
                                           else v for v in r[first_value:]]])
    return H.table(header, marked)


def _popularity_section(ctx, inp=None) -> str:
    if "recommend" not in ctx.outputs or "etl" not in ctx.outputs:
        return H.not_run("coverage and popularity", "the recommend stage is not in this run")
    from blast_ray.recommend import artifacts as rec_artifacts

    inp = inp or _Inputs(ctx)
    rec = rec_artifacts.load_recommendations(ctx.outputs["recommend"], columns=["item_idx"])
    stats = analysis.popularity_profile(inp.data.train, rec["item_idx"].to_numpy())
    k = (ctx.results.get("recommend") or {}).get("extra", {}).get("top_k", "K")
    return (f"<p>Over the served top-{H.esc(k)} lists of every user (recommend stage). Popularity = train "
            "interactions of an item; p(i) = popularity / users; novelty = mean -log2 p(i) (higher = less "
            "popular items).</p>" + H.table(["measure", "value"], [[m, v] for m, v in stats.items()]))


def _samples_section(ctx, inp=None) -> str:
    if "train" not in ctx.outputs or "etl" not in ctx.outputs:
        return H.not_run("sample users", "needs the etl and train outputs")
    inp = inp or _Inputs(ctx)
    data = inp.data
    profiles = None
    if "profiles" in ctx.outputs:
        from blast_ray.profiles import artifacts as prof_artifacts

        df = prof_artifacts.load_profiles(ctx.outputs["profiles"])
        profiles = df[df["kind"] == "user"].set_index("idx")
    cards = []
    for u in analysis.sample_users(data.train, data.test):
        hist = data.train[u].indices
        shown = ", ".join(H.esc(inp.title(int(i))) for i in hist[:12]) + (f" (+{len(hist) - 12} more)" if len(hist) > 12 else "")
        if profiles is not None and u in profiles.index:
            p = profiles.loc[u]
            how = f"engine {p['engine']}" + (", fell back to the template" if bool(p["fallback"]) else "")
            prof = f'<p><b>Profile</b> <span class="muted">({H.esc(how)})</span>: {H.esc(p["text"])}</p>'
        else:
            prof = '<p class="muted">No user profile in this run.</p>'
        top = analysis.evaluation_top(*inp.model, data, int(u), 10)
        rows = [[r + 1, H.Raw(f'<td class="txt{" hit" if hit else ""}">{H.esc(inp.title(i))}'
                              + (f'<span class="tag">{hit} hit</span>' if hit else "") + "</td>"), score]
                for r, (i, score, hit) in enumerate(top)]
        n_hits = sum(1 for *_, h in top if h)
        cards.append(f'<div class="card"><h3>user {H.esc(inp.user_ids[u])} '
                     f'<span class="muted">({len(hist)} train interactions; {n_hits} held-out hit(s) in the top-10)</span></h3>'
                     f"<p><b>Train history</b>: {shown}</p>{prof}"
                     + H.table(["rank", "recommended (train items masked)", "score"], rows, text_cols=(1,)) + "</div>")
    if not cards:
        return H.not_run("sample users", "no user has a test item")
    return ("<p>Five test users from least to most active. Their top-10 masks only train items, so held-out "
            "valid/test items can appear and are marked as hits (the served recommendations also exclude those).</p>"
            f'<div class="cards">{"".join(cards)}</div>')


def _graphs_section(ctx, inp=None) -> str:
    if "graphs" not in ctx.results:
        return H.not_run("kNN graphs", "the graphs stage is not in this run")
    m = ctx.results["graphs"]
    extra, counts = m.get("extra") or {}, m.get("row_counts") or {}
    shape = extra.get("shape") or {}
    rows = [["item modalities used", ", ".join(extra.get("item_modalities") or []) or "none"],
            ["modality weights", ", ".join(f"{k} {v:g}" for k, v in (extra.get("item_weights") or {}).items()) or "-"],
            ["user-user graph", extra.get("user_graph", "-")]]
    for key, n in sorted(counts.items()):
        rows.append([f"edges / rows: {key}", n])
        base = "users" if key.startswith("user") else "items"
        if shape.get(base) and not key.endswith("without_vector"):
            rows.append([f"mean degree: {key}", n / shape[base]])
    for feat, why in (extra.get("fallbacks") or {}).items():
        rows.append([f"fallback: {feat}", why if isinstance(why, str) else str(why)])
    out = H.table(["kNN graphs", "value"], rows, text_cols=(1,))
    search = extra.get("knn_search") or {}
    if search:
        keys = sorted({k for v in search.values() if isinstance(v, dict) for k in v})
        out += "<h3>Neighbour search (FAISS)</h3>" + H.table(
            ["graph", *keys], [[g, *[(v or {}).get(k, "-") if not isinstance((v or {}).get(k), (dict, list)) else str(v.get(k))
                                      for k in keys]] for g, v in search.items()])
    return out


def _config_section(ctx, inp=None) -> str:
    if getattr(ctx, "cfg", None) is None:
        return H.not_run("config", "no config in this context")
    return "<pre>" + H.esc(yaml.safe_dump(ctx.cfg.to_dict(), sort_keys=False, default_flow_style=None)) + "</pre>"


def _spread_table(spread: dict, what: str, label: str) -> str:
    d = spread.get(what) or {}
    if not d.get("pairs"):
        return ""
    edges = d.get("degree_edges", [])
    bounds = [-np.inf, *edges, np.inf]
    total_pop = max(1, sum(d.get("population", [])))
    rows = []
    for b, (pairs, share) in enumerate(zip(d["pairs"], d["share"])):
        lo, hi = bounds[b], bounds[b + 1]
        rng = f"<= {hi:g}" if lo == -np.inf else (f"> {lo:g}" if hi == np.inf else f"({lo:g}, {hi:g}]")
        pop = d.get("population", [0] * len(d["pairs"]))[b]
        rows.append([f"Q{b + 1}" + (" (lowest)" if b == 0 else ""), rng, pop, round(pop / total_pop, 4), pairs, share])
    return (f"<h3>{H.esc(label)}</h3>"
            + H.table([f"{what[:-1]} quartile", "train degree", what, f"share of {what}", "augmented pairs", "share of pairs"], rows))


def _augment_section(ctx) -> str:
    if "augment" not in ctx.results:
        return H.not_run("OT augmentation summary", "the augment stage is not in this run")
    m = ctx.results["augment"]
    extra = m.get("extra") or {}
    if not extra.get("enabled", True):
        return H.not_run("OT augmentation summary", "augment.enabled is false in this run")
    rows, seen = [], set()

    def add(key: str, value) -> None:
        name = key.rsplit(".", 1)[-1].replace("_", " ")
        if name in seen:  # the same figure recorded twice (a row count and extra, flat and nested): once
            return
        seen.add(name)
        label = key.replace("_", " ").replace(".", ": ")
        if (name.endswith(" s") or name == "seconds") and isinstance(value, (int, float)):
            value = H.Raw(H.seconds(value))
        rows.append([label, value])

    for k, v in (m.get("row_counts") or {}).items():
        add(k, v)
    for k, v in sorted(extra.items()):
        if isinstance(v, (int, float, str, bool)):
            add(k, v)
    for k, v in sorted(extra.items()):
        if isinstance(v, dict) and k != "spread":
            for kk, vv in sorted(v.items()):
                if isinstance(vv, (int, float, str, bool)):
                    add(f"{k}.{kk}", vv)
    out = H.table(["augmentation", "value"], rows) if rows else H.not_run("OT augmentation summary", "empty manifest")
    spread = extra.get("spread") or {}
    out += _spread_table(spread, "users", "Augmented pairs by user activity (train interactions per user)")
    out += _spread_table(spread, "items", "Augmented pairs by item popularity (train interactions per item)")
    return out


def _timings_section(ctx) -> str:
    rows = []
    for s in STAGES[:-1]:
        if s in ctx.results:
            t = ctx.results[s].get("timings") or {}
            rows.append([s, ctx.results[s].get("fingerprint", ""), H.Raw(f"<td>{H.seconds(t.get('total_s'))}</td>"),
                         ", ".join(f"{k.removesuffix('_seconds').removesuffix('_s')} {H.seconds(v)} s"
                                   for k, v in sorted(t.items()) if k != "total_s")])
        else:
            rows.append([s, "not run", "-", ""])
    return H.table(["stage", "output", "seconds", "detail"], rows, text_cols=(1, 3))


def build_report(ctx) -> str:
    sections = [
        ("Metrics vs baselines (same split)", _metrics_section),
        ("Results by user activity", _quartile_section),
        ("Coverage, novelty and popularity bias", _popularity_section),
        ("Sample users", _samples_section),
        ("Training curves", _history_section),
        ("Dataset statistics", _dataset_section),
        ("kNN graphs", _graphs_section),
        ("OT augmentation", _augment_section),
        ("Stage timings", _timings_section),
        ("Config used", _config_section),
    ]
    inp = _Inputs(ctx)
    rendered = []
    for title, fn in sections:
        try:
            rendered.append((title, fn(ctx) if fn in (_dataset_section, _augment_section, _timings_section) else fn(ctx, inp)))
        except Exception as e:  # noqa: BLE001 - one broken input must not hide the rest of the report
            log.warning("report section %r failed: %s", title, e)
            rendered.append((title, H.not_run(title, f"could not be rendered: {type(e).__name__}: {e}")))
    sub = f"run {ctx.run_id} - generated {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())} - store {ctx.store.root}"
    return H.page(f"blast-ray report: {ctx.dataset}", rendered, sub)


def run(ctx, out: StageOutput) -> dict[str, Any]:
    t0 = time.time()
    doc = build_report(ctx)
    path = artifacts.write_report(ctx.store, ctx.dataset, ctx.run_id, doc)
    log.debug("report written to %s", path)
    return {"timings": {"render_s": round(time.time() - t0, 3)}, "extra": {"report_path": path, "bytes": len(doc)}}
