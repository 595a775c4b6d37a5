"""The end-of-run console summary: stage status, metrics table, where the outputs went."""

from __future__ import annotations

from typing import Any

from blast_ray.config import STAGES, PipelineConfig
from blast_ray.store import layout


def metric_order(name: str) -> tuple:
    """Sort key: recall, ndcg, precision, map, then by cutoff."""
    base, _, k = name.partition("@")
    order = {"recall": 0, "ndcg": 1, "precision": 2, "map": 3}
    return (order.get(base, 9), base, int(k) if k.isdigit() else 0)


def format_metrics_table(columns: dict[str, dict[str, Any]]) -> str:
    """A plain-text table, one row per ``metric@k`` and one column per entry of ``columns``.

    ``columns`` maps a column title (e.g. ``"blast test"``) to {metric@k: value}.
    Also accepts one flat {"test.recall@20": 0.1, ...} dict (columns = splits).

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
        cells = (columns[c].get(m) for c in columns)
        lines.append(f"{m:<12}" + "".join(f"{v:>{width}.4f}" if isinstance(v, (int, float)) else f"{'-':>{width}}" for v in cells))
    return "\n".join(lines)


def summary_columns(model: str, metrics: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The run's model (valid and test) followed by each baseline's test column."""
    cols: dict[str, dict[str, Any]] = {}
    for split in ("valid", "test"):
        cols[f"{model} {split}"] = {k.split(".", 1)[1]: v for k, v in metrics.items() if k.startswith(split + ".")}
    for name, flat in baselines.items():
        cols[f"{name} test"] = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("test.")}
    return {c: v for c, v in cols.items() if v}


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
        print(f"metrics (full ranking; test at the best valid epoch; baselines on the same split, "
              f"evaluate.baselines):")
        print(format_metrics_table(summary_columns(cfg.train.model, metrics, ev.get("baselines") or {})))
    report = result.manifests.get("report", {}).get("extra", {}).get("report_path")
    print()
    run_json = "/".join(layout.run_manifest_parts(cfg.dataset.name, result.run_id)[1:])
    print(f"outputs: {cfg.store}/{cfg.dataset.name}/  (run manifest: {run_json})")
    if report:
        print(f"report:  {report}")
