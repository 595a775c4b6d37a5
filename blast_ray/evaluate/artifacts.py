"""The evaluate stage's artifacts: file names, Arrow schemas, writers and readers.

- ``metrics.parquet``: (split, metric, value) full-ranking metrics of the run's model, plus the
  ``n_users`` row per split (evaluated user count);
- ``baselines.parquet``: (model, split, metric, value) of the reference models (only when some ran).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

METRICS_FILE = "metrics.parquet"
BASELINES_FILE = "baselines.parquet"

METRICS_SCHEMA = pa.schema([("split", pa.string()), ("metric", pa.string()), ("value", pa.float64())])
BASELINES_SCHEMA = pa.schema([("model", pa.string()), ("split", pa.string()), ("metric", pa.string()), ("value", pa.float64())])


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pydict({n: [r[n] for r in rows] for n in schema.names}, schema=schema)


def metric_rows(**splits: dict[str, float]) -> list[dict[str, Any]]:
    """{"valid": {...}, "test": {...}} -> [{"split", "metric", "value"}, ...]."""
    return [{"split": s, "metric": k, "value": float(v)} for s, m in splits.items() for k, v in m.items()]


def write_metrics(out, rows: list[dict[str, Any]]) -> None:
    out.store.write_table(_table(rows, METRICS_SCHEMA), *out.parts, METRICS_FILE)


def load_metrics(output) -> list[dict[str, Any]]:
    return output.store.read_table(*output.parts, METRICS_FILE).to_pylist()


def write_baselines(out, baselines: dict[str, dict[str, float]]) -> None:
    """{model: {"valid.recall@20": v, ...}} -> baselines.parquet (written only when non-empty)."""
    rows = [{"model": m, "split": k.split(".", 1)[0], "metric": k.split(".", 1)[1], "value": float(v)}
            for m, flat in baselines.items() for k, v in flat.items()]
    out.store.write_table(_table(rows, BASELINES_SCHEMA), *out.parts, BASELINES_FILE)


def has_baselines(output) -> bool:
    return output.store.exists(*output.parts, BASELINES_FILE)


def load_baselines(output) -> dict[str, dict[str, float]]:
    """baselines.parquet -> {model: {"<split>.<metric>": value}} ({} when no baseline ran)."""
    if not has_baselines(output):
        return {}
    found: dict[str, dict[str, float]] = {}
    for r in output.store.read_table(*output.parts, BASELINES_FILE).to_pylist():
        found.setdefault(r["model"], {})[f"{r['split']}.{r['metric']}"] = r["value"]
    return found
