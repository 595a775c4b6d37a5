"""The end-of-run console summary: stage status, metrics table, where the outputs went."""

from __future__ import annotations

from typing import Any

from blast_ray.config import STAGES, PipelineConfig


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """Rows ``split``, columns ``metric@k``, from a flat {"test.recall@20": 0.1, ...} dict."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or "." not in key:
            continue
        split, metric = key.split(".", 1)
        rows.setdefault(split, {})[metric] = float(value)
    if not rows:
        return "(no metrics)"
    cols = sorted({c for r in rows.values() for c in r}, key=lambda c: (c.split("@")[0], int(c.split("@")[1]) if "@" in c and c.split("@")[1].isdigit() else 0))
    head = f"{'split':<8}" + "".join(f"{c:>14}" for c in cols)
    lines = [head, "-" * len(head)]
    for split in sorted(rows):
        lines.append(f"{split:<8}" + "".join(f"{rows[split].get(c, float('nan')):>14.4f}" for c in cols))
    return "\n".join(lines)


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
        print()
        print(format_metrics_table(metrics))
    report = result.manifests.get("report", {}).get("extra", {}).get("report_path")
    print()
    print(f"outputs: {cfg.store}/{cfg.dataset.name}/  (run manifest: runs/{result.run_id}/run.json)")
    if report:
        print(f"report:  {report}")
