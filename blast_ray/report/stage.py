"""The report stage: write the run's self-contained ``report.html`` into ``<dataset>/runs/<run_id>/``
(``blast_ray.report.artifacts``).

It reads only what this run resolved (``ctx.outputs``) plus, for the baselines table, the other
committed train outputs on the same ETL fingerprint. Any missing piece renders as a "not run"
section; no number is ever made up.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from blast_ray.config import STAGES
from blast_ray.etl import artifacts as etl_artifacts
from blast_ray.report import artifacts
from blast_ray.report import html as H
from blast_ray.report.console import epoch_cap_warning, metric_order
from blast_ray.store import ArtifactStore, StageOutput, layout

log = logging.getLogger(__name__)


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
    return stats + charts


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


def _history_section(ctx) -> str:
    note = _epoch_cap_note(ctx)
    if "train" not in ctx.outputs:
        return note + H.not_run("training curves", "the train stage is not in this run")
    train: StageOutput = ctx.outputs["train"]
    from blast_ray.train import artifacts as train_artifacts

    if not train_artifacts.has_history(train):
        return H.not_run("training curves", f"the train output has no {train_artifacts.HISTORY_FILE}")
    df = train_artifacts.load_history(train)
    x = df["epoch"].to_numpy() if "epoch" in df else np.arange(len(df))
    loss = {c: df[c].to_numpy() for c in df.columns if "loss" in c.lower()}
    rank = {c: df[c].to_numpy() for c in df.columns if any(m in c.lower() for m in ("recall", "ndcg"))}
    out = note + '<div class="charts">'
    out += H.line_svg(x, loss, "training loss") if loss else H.not_run("loss curve", "no loss column in history")
    out += H.line_svg(x, rank, "validation Recall/NDCG") if rank else H.not_run("validation curve", "no metric columns in history")
    return out + "</div>"


def find_baselines(store: ArtifactStore, dataset: str, etl_fingerprint: str) -> list[dict[str, Any]]:
    """Committed train manifests (any model) whose ETL input is ``etl_fingerprint``, newest first."""
    found = []
    for out in layout.committed_outputs(store, dataset, "train"):
        if out.inputs.get("etl") == etl_fingerprint:
            found.append(out.manifest)
    return found


def _metrics_section(ctx) -> str:
    """This run's model (valid + test) against the baselines the evaluate stage trained on the same
    split, plus any other committed train output on the same ETL fingerprint (earlier runs)."""
    if "train" not in ctx.outputs or "etl" not in ctx.outputs:
        return H.not_run("final metrics", "no train output in this run")
    this_fp = ctx.outputs["train"].fingerprint
    model = ctx.cfg.train.model
    rows: list[tuple[str, dict]] = []
    ev = ctx.results.get("evaluate") or {}
    if (ev.get("extra") or {}).get("metrics"):
        rows.append((f"{model} (this run)", ev["extra"]["metrics"]))
    for name, flat in ((ev.get("extra") or {}).get("baselines") or {}).items():
        rows.append((f"{name} (baseline, same split)", flat))
    for m in find_baselines(ctx.store, ctx.dataset, ctx.outputs["etl"].fingerprint):
        if m.get("fingerprint") == this_fp and rows:
            continue  # already shown through the evaluate stage
        other = ((m.get("config") or {}).get("train") or {}).get("model", "?")
        tag = f"{other} (this run, train stage)" if m.get("fingerprint") == this_fp else f"{other} (train output {m.get('fingerprint', '')[:8]})"
        rows.append((tag, (m.get("extra") or {}).get("metrics") or {}))
    keys = sorted({k for _, m in rows for k, v in m.items() if isinstance(v, (int, float)) and k.startswith("test.")},
                  key=lambda k: metric_order(k.split(".", 1)[1]))
    if not keys:
        return H.not_run("final metrics", "the train outputs report no metrics")
    if any("valid.recall@20" in m for _, m in rows):
        keys.insert(0, "valid.recall@20")  # the selection metric, next to the test figures
    note = ("<p>Full ranking over all items (train items masked; test also masks valid). Every model is "
            "selected on validation Recall@20; test figures are at its best validation epoch.</p>")
    return note + H.table(["model"] + keys, [[tag] + [m.get(k, "-") for k in keys] for tag, m in rows])


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
    rows = [[f"row count: {k}", v] for k, v in (m.get("row_counts") or {}).items()]
    for k, v in sorted(extra.items()):
        if isinstance(v, (int, float, str, bool)):
            rows.append([k, v])
        elif isinstance(v, dict) and k != "spread":
            rows += [[f"{k}.{kk}", vv] for kk, vv in sorted(v.items()) if isinstance(vv, (int, float, str, bool))]
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
            rows.append([s, ctx.results[s].get("fingerprint", ""), t.get("total_s", "-"),
                         ", ".join(f"{k}={v}" for k, v in sorted(t.items()) if k != "total_s")])
        else:
            rows.append([s, "not run", "-", ""])
    return H.table(["stage", "output", "seconds", "detail"], rows)


def build_report(ctx) -> str:
    sections = [
        ("Dataset statistics", _dataset_section),
        ("Training curves", _history_section),
        ("Final metrics vs baselines (same split)", _metrics_section),
        ("OT augmentation", _augment_section),
        ("Stage timings", _timings_section),
    ]
    rendered = []
    for title, fn in sections:
        try:
            rendered.append((title, fn(ctx)))
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
