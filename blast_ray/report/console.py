"""The end-of-run console summary: stage status, metrics table, where the outputs went."""

from __future__ import annotations

from typing import Any

from blast_ray.config import STAGES, PipelineConfig
from blast_ray.store import layout


CONSOLE_METRICS = ("recall", "ndcg")  # the end-of-run table; every metric is in the run record and the report


def metric_order(name: str) -> tuple:
    """Sort key: recall, ndcg, precision, map, then by cutoff."""
    base, _, k = name.partition("@")
    order = {"recall": 0, "ndcg": 1, "precision": 2, "map": 3}
    return (order.get(base, 9), base, int(k) if k.isdigit() else 0)


def format_metrics_table(columns: dict[str, dict[str, Any]], mark_best: tuple[str, ...] = ()) -> str:
    """A plain-text table, one row per ``metric@k`` and one column per entry of ``columns``.

    ``columns`` maps a column title (e.g. ``"blast test"``) to {metric@k: value}.
    Also accepts one flat {"test.recall@20": 0.1, ...} dict (columns = splits).
    ``mark_best``: column titles compared per row; the best value among them gets a ``*``.

    >>> print(format_metrics_table({"test.recall@20": 0.25}))
    metric            test
    ----------------------
    recall@20       0.2500
    """
    if columns and all(not isinstance(v, dict) for v in columns.values()):
        flat, columns = columns, {}
        for key, value in flat.items():
            if isinstance(value, (int, float)) and "." in key:
                split, metric = key.split(".", 1)
                columns.setdefault(split, {})[metric] = value
        columns = {s: columns[s] for s in sorted(columns, key=lambda s: (s != "valid", s))}
    metrics = sorted({m for col in columns.values() for m, v in col.items() if isinstance(v, (int, float))}, key=metric_order)
    if not metrics:
        return "(no metrics)"
    width = max(10, *(len(c) + 2 for c in columns))
    head = f"{'metric':<12}" + "".join(f"{c:>{width}}" for c in columns)
    lines = [head, "-" * len(head)]
    for m in metrics:
        compared = [columns[c].get(m) for c in mark_best if isinstance(columns.get(c, {}).get(m), (int, float))]
        best = max(compared) if len(compared) > 1 else None
        cells = []
        for c in columns:
            v = columns[c].get(m)
            if not isinstance(v, (int, float)):
                cells.append(f"{'-':>{width}} ")
            else:
                cells.append(f"{v:>{width}.4f}" + ("*" if c in mark_best and v == best else " "))
        lines.append(f"{m:<12}" + "".join(cells).rstrip())
    if mark_best:
        lines.append(f"(* best of {', '.join(mark_best)})")
    return "\n".join(lines)


def baseline_verdict(model: str, metrics: dict[str, Any], baselines: dict[str, dict[str, Any]],
                     metric: str = "recall@20") -> str | None:
    """One plain sentence: does the run's model beat the best baseline on test ``metric``?

    >>> baseline_verdict("blast", {"test.recall@20": 0.36}, {"bpr": {"test.recall@20": 0.3666}, "pop": {"test.recall@20": 0.19}})
    'a baseline wins: bpr has test recall@20 0.3666, blast 0.3600 (-1.8%)'
    >>> baseline_verdict("blast", {"test.recall@20": 0.40}, {"bpr": {"test.recall@20": 0.3666}})
    'blast beats every baseline on test recall@20: 0.4000 vs bpr 0.3666 (+9.1%)'
    >>> baseline_verdict("blast", {"test.recall@20": 0.37831}, {"lightgcn": {"test.recall@20": 0.37829}})
    'blast ties the best baseline on test recall@20: lightgcn 0.3783, blast 0.3783 (no gain)'

    Equal to 4 decimals is a tie, not a win (a tuned BLAST with every part off IS LightGCN).
    """
    key = f"test.{metric}"
    own = metrics.get(key)
    scored = {b: f[key] for b, f in baselines.items() if isinstance(f.get(key), (int, float))}
    if not isinstance(own, (int, float)) or not scored:
        return None
    best = max(scored, key=scored.get)
    rel = (own - scored[best]) / scored[best] if scored[best] else float("inf")
    if round(own, 4) == round(scored[best], 4):
        return f"{model} ties the best baseline on test {metric}: {best} {scored[best]:.4f}, {model} {own:.4f} (no gain)"
    if own > scored[best]:
        return f"{model} beats every baseline on test {metric}: {own:.4f} vs {best} {scored[best]:.4f} ({rel:+.1%})"
    return f"a baseline wins: {best} has test {metric} {scored[best]:.4f}, {model} {own:.4f} ({rel:+.1%})"


def in_config_order(baselines: dict[str, Any], order: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """``baselines`` keyed in the order of ``order`` (``evaluate.baselines``), any others after it
    alphabetically: a fresh evaluate output lists them as trained, a reused one as stored (sorted),
    and the console and the report must show the same columns in the same place either way.

    >>> list(in_config_order({"bpr": 1, "pop": 2, "freedom": 3}, ("pop", "bpr", "lightgcn", "freedom")))
    ['pop', 'bpr', 'freedom']
    """
    rank = {name: i for i, name in enumerate(order)}
    return {k: baselines[k] for k in sorted(baselines, key=lambda k: (rank.get(k, len(rank)), k))}


def summary_columns(model: str, metrics: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The run's model (valid and test) followed by each baseline's test column."""
    cols: dict[str, dict[str, Any]] = {}
    for split in ("valid", "test"):
        cols[f"{model} {split}"] = {k.split(".", 1)[1]: v for k, v in metrics.items() if k.startswith(split + ".")}
    for name, flat in baselines.items():
        cols[f"{name} test"] = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("test.")}
    return {c: v for c, v in cols.items() if v}


def epoch_cap_warning(train_extra: dict[str, Any] | None) -> str | None:
    """The warning line when training stopped at the epoch cap while validation still improved.

    ``train_extra``: the train manifest's ``extra``; reads its ``epoch_cap`` entry
    ``{"hit": bool, "still_improving": bool, "best_epoch": int, "epochs_run": int}``. None when
    the entry is absent or the run did not stop while still improving.

    >>> epoch_cap_warning({"epoch_cap": {"hit": True, "still_improving": True, "best_epoch": 59, "epochs_run": 60}})
    'stopped at the epoch cap (60 epochs run, best validation epoch 59) while validation was still improving: raise train.epochs'
    >>> epoch_cap_warning({"epoch_cap": {"hit": True, "still_improving": False, "best_epoch": 20, "epochs_run": 60}}) is None
    True
    """
    cap = (train_extra or {}).get("epoch_cap")
    if not isinstance(cap, dict) or not cap.get("still_improving"):
        return None
    return (f"stopped at the epoch cap ({cap.get('epochs_run', '?')} epochs run, best validation epoch "
            f"{cap.get('best_epoch', '?')}) while validation was still improving: raise train.epochs")


def print_summary(cfg: PipelineConfig, result) -> None:
    print()
    print(f"run {result.run_id} on dataset {cfg.dataset.name} (store: {cfg.store})")
    for stage in STAGES:
        st = result.status.get(stage, "not-selected")
        if st == "not-selected":
            continue
        m = result.manifests.get(stage, {})
        secs = m.get("timings", {}).get("total_s")
        extra = f"{secs:8.1f}s" if isinstance(secs, (int, float)) else " " * 9
        print(f"  {stage:<10} {st:<16}{extra}  {m.get('fingerprint', '')}")
    metrics = result.metrics()
    if metrics:
        ev = result.manifests.get("evaluate", {}).get("extra", {})
        print()
        baselines = in_config_order(ev.get("baselines") or {}, cfg.evaluate.baselines)
        tuned = sorted((ev.get("baseline_training") or {}).get("overrides") or {})
        print("metrics (full ranking; test at the best valid epoch; baselines on the same split, evaluate.baselines"
              f"{'; own hyperparameters (evaluate.baseline_train): ' + ', '.join(tuned) if tuned else ''}"
              "; precision/map: blast runs show, report):")
        # recall and ndcg fit one screen; precision/map: `blast runs show RUN_ID` and the report
        cols = {c: {m: v for m, v in col.items() if m.split("@")[0] in CONSOLE_METRICS}
                for c, col in summary_columns(cfg.train.model, metrics, baselines).items()}
        print(format_metrics_table(cols, mark_best=tuple(c for c in cols if c.endswith(" test"))))
        verdict = baseline_verdict(cfg.train.model, metrics, baselines, cfg.evaluate.select_metric)
        if verdict:
            print(verdict)
    cap_warning = epoch_cap_warning(result.manifests.get("train", {}).get("extra"))
    if cap_warning:
        print()
        print(f"WARNING: train: {cap_warning}")
    report = result.manifests.get("report", {}).get("extra", {}).get("report_path")
    print()
    run_json = "/".join(layout.run_manifest_parts(cfg.dataset.name, result.run_id)[1:])
    print(f"outputs: {cfg.store}/{cfg.dataset.name}/  (run manifest: {run_json})")
    if report:
        print(f"report:  {report}")
