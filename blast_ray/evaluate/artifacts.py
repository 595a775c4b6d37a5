"""The evaluate stage's artifacts: file names, Arrow schemas, writers and readers.

- ``metrics.parquet``: (split, metric, value) full-ranking metrics of the run's model, plus the
  ``n_users`` row per split (evaluated user count);
- ``baselines.parquet``: (model, split, metric, value) of the reference models (only when some ran);
- ``baseline_history.parquet``: the training curve of every trained baseline (pop has none), one
  row per (model, epoch, series): series ``loss`` or ``valid.<metric>@<k>`` (only epochs with a
  validation have those), and ``chosen_epoch``, the epoch whose weights the test figures use
  (:data:`BASELINE_HISTORY_SCHEMA`; written only when some baseline trained);
- ``per_user_test.parquet``: per-user test results of every scored model (this run's model and each
  baseline, pop included): ``model``, ``user_idx`` (test users only), then one float64 column per
  ``recall@k`` / ``ndcg@k`` (k in ``evaluate.ks``), same protocol as ``metrics.parquet`` (the mean of
  a column over a model's users is that model's test metric).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

METRICS_FILE = "metrics.parquet"
BASELINES_FILE = "baselines.parquet"
BASELINE_HISTORY_FILE = "baseline_history.parquet"
PER_USER_FILE = "per_user_test.parquet"

METRICS_SCHEMA = pa.schema([("split", pa.string()), ("metric", pa.string()), ("value", pa.float64())])
BASELINES_SCHEMA = pa.schema([("model", pa.string()), ("split", pa.string()), ("metric", pa.string()), ("value", pa.float64())])
BASELINE_HISTORY_SCHEMA = pa.schema([("model", pa.string()), ("epoch", pa.int64()), ("series", pa.string()),
                                     ("value", pa.float64()), ("chosen_epoch", pa.int64())])
# then one float64 column per metric@k, sorted by name
PER_USER_KEY_SCHEMA = pa.schema([("model", pa.string()), ("user_idx", pa.int64())])


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


# ---- baseline_history.parquet -------------------------------------------------------------------
def history_rows(model: str, history: list[dict[str, Any]], chosen_epoch: int) -> list[dict[str, Any]]:
    """A trainer's per-epoch rows ({"epoch", "loss", "valid.recall@20", ...}, see
    :class:`blast_ray.train.loop.TrainState`) -> long rows of :data:`BASELINE_HISTORY_SCHEMA`
    (the loss and every ``valid.*`` value; timings and counts are left out)."""
    return [{"model": model, "epoch": int(r["epoch"]), "series": k, "value": float(v), "chosen_epoch": int(chosen_epoch)}
            for r in history for k, v in r.items()
            if (k == "loss" or k.startswith("valid.")) and isinstance(v, (int, float)) and not isinstance(v, bool)]


def write_baseline_history(out, rows: list[dict[str, Any]]) -> None:
    """Rows from :func:`history_rows` (all baselines together) -> baseline_history.parquet."""
    out.store.write_table(_table(rows, BASELINE_HISTORY_SCHEMA), *out.parts, BASELINE_HISTORY_FILE)


def load_baseline_history(output) -> dict[str, dict[str, Any]]:
    """{model: {"history": DataFrame (epoch, loss, valid.* columns; NaN on epochs without
    validation), "chosen_epoch": int}} ({} when no baseline trained or the output predates the file)."""
    if not output.store.exists(*output.parts, BASELINE_HISTORY_FILE):
        return {}
    df = output.store.read_table(*output.parts, BASELINE_HISTORY_FILE).to_pandas()
    found: dict[str, dict[str, Any]] = {}
    for model, g in df.groupby("model", sort=False):
        wide = g.pivot_table(index="epoch", columns="series", values="value", aggfunc="first").sort_index()
        wide.columns.name = None
        found[str(model)] = {"history": wide.reset_index(), "chosen_epoch": int(g["chosen_epoch"].iloc[0])}
    return found


# ---- per_user_test.parquet ----------------------------------------------------------------------
def per_user_table(per_model: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]) -> pa.Table:
    """{model: (user_idx (U,), {"recall@20": (U,), ...})} -> one table: :data:`PER_USER_KEY_SCHEMA`
    then one float64 column per metric (the union over models, sorted; null where a model lacks it)."""
    metrics = sorted({m for _, per in per_model.values() for m in per})
    schema = pa.schema(list(PER_USER_KEY_SCHEMA) + [pa.field(m, pa.float64()) for m in metrics])
    cols: dict[str, list] = {n: [] for n in schema.names}
    for model, (users, per) in per_model.items():
        n = len(users)
        cols["model"].extend([model] * n)
        cols["user_idx"].extend(np.asarray(users, dtype=np.int64).tolist())
        for m in metrics:
            cols[m].extend(np.asarray(per[m], dtype=np.float64).tolist() if m in per else [None] * n)
    return pa.Table.from_pydict(cols, schema=schema)


def write_per_user(out, per_model: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]) -> None:
    out.store.write_table(per_user_table(per_model), *out.parts, PER_USER_FILE)


def load_per_user(output) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """per_user_test.parquet -> {model: (user_idx (U,) int64, {metric: (U,) float64})} ({} when the
    output predates the file)."""
    if not output.store.exists(*output.parts, PER_USER_FILE):
        return {}
    t = output.store.read_table(*output.parts, PER_USER_FILE)
    models = np.asarray(t.column("model").to_pylist(), dtype=object)
    users = t.column("user_idx").to_numpy()
    metrics = [n for n in t.schema.names if n not in PER_USER_KEY_SCHEMA.names]
    values = {m: t.column(m).to_numpy(zero_copy_only=False).astype(np.float64) for m in metrics}
    found = {}
    for model in dict.fromkeys(models.tolist()):
        sel = models == model
        found[model] = (users[sel].astype(np.int64), {m: v[sel] for m, v in values.items() if not np.isnan(v[sel]).all()})
    return found
