"""The recommend stage's artifacts: the ``recommendations/`` folder of partitioned Parquet with
:data:`RECOMMENDATIONS_SCHEMA`, written by Ray Data. One row per (user, rank)::

    user_id   string   the user's raw id (ETL ``users.user_id``)
    rank      int32    1..K, 1 = best
    item_id   string   the item's raw id (ETL ``items.item_id``)
    score     float32  the model's score (higher = better)
    title     string   the item's title; null when the ETL items table has none for it
    user_idx  int64    dense 0-based user index (the ETL/train index)
    item_idx  int64    dense 0-based item index

A consumer needs no other table: raw ids and titles are joined in by the stage.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

RECOMMENDATIONS_DIR = "recommendations"

RECOMMENDATIONS_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("rank", pa.int32()),
    ("item_id", pa.string()),
    ("score", pa.float32()),
    ("title", pa.string()),
    ("user_idx", pa.int64()),
    ("item_idx", pa.int64()),
])


def recommendation_table(users: np.ndarray, top_items: np.ndarray, top_scores: np.ndarray,
                         user_ids: np.ndarray, item_ids: np.ndarray, titles: np.ndarray) -> pa.Table:
    """One block as an Arrow table of :data:`RECOMMENDATIONS_SCHEMA`.

    users (B,) user indices; top_items / top_scores (B, K); user_ids (n_users,) and item_ids,
    titles (n_items,) object arrays indexed by idx (titles may hold None). B*K rows."""
    users = np.asarray(users, dtype=np.int64)
    top = np.asarray(top_items, dtype=np.int64)
    k = top.shape[1] if top.ndim == 2 else 0
    flat_items = top.ravel()
    flat_users = np.repeat(users, k)
    cols = {
        "user_id": pa.array(np.asarray(user_ids, dtype=object)[flat_users], type=pa.string()),
        "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), len(users)), type=pa.int32()),
        "item_id": pa.array(np.asarray(item_ids, dtype=object)[flat_items], type=pa.string()),
        "score": pa.array(np.asarray(top_scores, dtype=np.float32).ravel(), type=pa.float32()),
        "title": pa.array(np.asarray(titles, dtype=object)[flat_items], type=pa.string()),
        "user_idx": pa.array(flat_users, type=pa.int64()),
        "item_idx": pa.array(flat_items, type=pa.int64()),
    }
    return pa.Table.from_pydict(cols, schema=RECOMMENDATIONS_SCHEMA)


def recommendation_frame(users, top_items, top_scores, user_ids, item_ids, titles) -> pd.DataFrame:
    """:func:`recommendation_table` as a pandas frame."""
    return recommendation_table(users, top_items, top_scores, user_ids, item_ids, titles).to_pandas()


def recommendations_uri(out) -> str:
    """URI of the recommendations folder of a recommend output (where Ray Data writes/reads)."""
    return out.uri(RECOMMENDATIONS_DIR)


def _dataset(output):
    import pyarrow.dataset as ds

    return ds.dataset(output.store.path(*output.parts, RECOMMENDATIONS_DIR), format="parquet",
                      filesystem=output.store.fs, schema=RECOMMENDATIONS_SCHEMA)


def load_recommendations(output, user_idx: int | None = None, user_id: str | None = None,
                         columns: list[str] | None = None) -> pd.DataFrame:
    """The recommendations of a committed recommend output, sorted by (user_idx, rank); only one
    user's when ``user_idx`` (dense index) or ``user_id`` (raw id) is given (the filter is pushed
    down to the Parquet scan: one user's rows are read, not the whole folder)."""
    import pyarrow.dataset as ds

    flt = None
    if user_idx is not None:
        flt = ds.field("user_idx") == int(user_idx)
    if user_id is not None:
        f2 = ds.field("user_id") == str(user_id)
        flt = f2 if flt is None else flt & f2
    cols = None if columns is None else list(dict.fromkeys([*columns, "user_idx", "rank"]))
    table = _dataset(output).to_table(filter=flt, columns=cols)
    out = table.to_pandas().sort_values(["user_idx", "rank"], ignore_index=True)
    return out if columns is None else out[columns]


def sample_user_ids(output, n: int = 5) -> list[str]:
    """A few raw user ids of the output (for an error message that shows what ids look like)."""
    return _dataset(output).head(max(n * 50, 1), columns=["user_id"]).column("user_id").unique().to_pylist()[:n]
