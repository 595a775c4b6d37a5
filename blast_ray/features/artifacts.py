"""The features stage's artifacts: one vectors table per modality, and the visual rejects.

Stage output::

    item_text.parquet            item_idx int64, vector fixed_size_list<float32>[d]  (every item)
    user_text.parquet            user_idx int64, vector fixed_size_list<float32>[d]  (every user; zero
                                 row for a user without a profile)
    item_visual.parquet          item_idx int64, vector fixed_size_list<float32>[d]  (only items whose
                                 image gave a vector)
    item_visual_rejects.parquet  item_idx int64, item_id string, source string, reason string

Which modalities exist, and the row counts (``n_items``/``n_users``), are in the manifest's
``extra`` (``modalities``); :func:`load_features` and :func:`load_feature_masks` read them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

FEATURE_FILES = {"item_text": "item_text.parquet", "user_text": "user_text.parquet", "item_visual": "item_visual.parquet"}
IDX_COLUMN = {"item_text": "item_idx", "user_text": "user_idx", "item_visual": "item_idx"}
VISUAL_REJECTS_FILE = "item_visual_rejects.parquet"
VISUAL_REJECTS_SCHEMA = pa.schema([("item_idx", pa.int64()), ("item_id", pa.string()), ("source", pa.string()),
                                   ("reason", pa.string())])


def vectors_schema(idx_name: str, dim: int) -> pa.Schema:
    return pa.schema([(idx_name, pa.int64()), ("vector", pa.list_(pa.float32(), dim))])


def vectors_table(idx_name: str, ids: np.ndarray, vecs: np.ndarray) -> pa.Table:
    """``idx_name`` int64 + ``vector`` fixed_size_list<float32>[d] (one row per id)."""
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or len(vecs) != len(ids):
        raise ValueError(f"vectors shape {vecs.shape} does not match {len(ids)} ids")
    flat = pa.array(vecs.reshape(-1), type=pa.float32())
    return pa.table({idx_name: pa.array(np.asarray(ids, dtype=np.int64)),
                     "vector": pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1])})


def table_vectors(table: pa.Table, idx_name: str, n: int | None = None, allow_missing: bool = False) -> np.ndarray:
    """(n, d) float32 rows in idx order from a vectors table; every idx in [0, n) must be present
    once (``allow_missing``: each at most once, absent rows are zero)."""
    ids = table[idx_name].to_numpy()
    col = table["vector"].combine_chunks()
    d = col.type.list_size if pa.types.is_fixed_size_list(col.type) else len(col[0])
    vals = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(ids), d)
    n = (int(ids.max()) + 1 if len(ids) else 0) if n is None else n
    n_unique = len(np.unique(ids))
    in_range = not len(ids) or (ids.min() >= 0 and ids.max() < n)
    if n_unique != len(ids) or not in_range or (not allow_missing and len(ids) != n):
        raise ValueError(f"vector table keyed by {idx_name} must hold each idx in [0, {n}) exactly once; has {len(ids)} rows")
    out = np.zeros((n, d), dtype=np.float32)
    out[ids] = vals
    return out


def _check(name: str) -> str:
    if name not in FEATURE_FILES:
        raise ValueError(f"feature {name!r} does not exist; features are {', '.join(FEATURE_FILES)}")
    return name


def write_vectors(out: Any, name: str, ids: np.ndarray, vecs: np.ndarray) -> None:
    """Write modality ``name`` (item_text | user_text | item_visual) of output ``out``."""
    out.store.write_table(vectors_table(IDX_COLUMN[_check(name)], ids, vecs), *out.parts, FEATURE_FILES[name])


def write_visual_rejects(out: Any, rejects: pd.DataFrame) -> None:
    """The items without a visual vector (item_idx, item_id, source, reason)."""
    table = pa.Table.from_pandas(rejects[VISUAL_REJECTS_SCHEMA.names].astype({"source": object}),
                                 schema=VISUAL_REJECTS_SCHEMA, preserve_index=False)
    out.store.write_table(table, *out.parts, VISUAL_REJECTS_FILE)


def load_visual_rejects(out: Any) -> pd.DataFrame:
    """The visual rejects of ``out`` (an empty frame when every item has a vector)."""
    if not out.store.exists(*out.parts, VISUAL_REJECTS_FILE):
        return VISUAL_REJECTS_SCHEMA.empty_table().to_pandas()
    return out.store.read_table(*out.parts, VISUAL_REJECTS_FILE).to_pandas()


def load_vectors_table(out: Any, name: str, columns: list[str] | None = None) -> pa.Table:
    return out.store.read_table(*out.parts, FEATURE_FILES[_check(name)], columns=columns)


def _row_count(extra: dict, name: str) -> int | None:
    return extra.get("n_items" if IDX_COLUMN[name] == "item_idx" else "n_users")


def load_features(out: Any) -> dict[str, np.ndarray]:
    """name -> (rows in idx order, d) float32 for each modality of a committed features output.

    Every array has one row per item (user); an item without a visual vector (image missing or
    undecodable) has a zero row: use ``load_feature_masks`` to tell them apart.
    """
    extra = out.manifest.get("extra", {})
    res = {}
    for name in extra.get("modalities", []):
        table = load_vectors_table(out, name)
        res[name] = table_vectors(table, IDX_COLUMN[name], _row_count(extra, name), allow_missing=(name == "item_visual"))
    return res


def load_feature_masks(out: Any) -> dict[str, np.ndarray]:
    """name -> bool array, True where the row holds a real vector (False: no image for that item)."""
    extra = out.manifest.get("extra", {})
    res = {}
    for name in extra.get("modalities", []):
        ids = load_vectors_table(out, name, columns=[IDX_COLUMN[name]])[IDX_COLUMN[name]].to_numpy()
        n = _row_count(extra, name)
        mask = np.zeros(int(ids.max()) + 1 if n is None else n, dtype=bool)
        mask[ids] = True
        res[name] = mask
    return res
