"""The augment stage's artifacts: the augmented pairs H and the false-negative candidates G.

Stage output::

    augmented_pairs.parquet  user_idx int64, item_idx int64, plan_value float64: the top-q cells of
                             the Sinkhorn plan among cells with R_ui = 0 (H)
    false_negatives.parquet  user_idx int64, item_idx int64: the nonzeros of G (row-major order);
                             a folder of part files, one per user row block, in block order
                             (a single file when written by ``write_augmentation``)

Both are empty (zero rows, same schema) when ``augment.enabled`` is false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

AUGMENTED_PAIRS_FILE = "augmented_pairs.parquet"
FALSE_NEGATIVES_FILE = "false_negatives.parquet"
AUGMENTED_PAIRS_SCHEMA = pa.schema([("user_idx", pa.int64()), ("item_idx", pa.int64()), ("plan_value", pa.float64())])
FALSE_NEGATIVES_SCHEMA = pa.schema([("user_idx", pa.int64()), ("item_idx", pa.int64())])


@dataclass
class Augmentation:
    """H as arrays (users, items, values) and G as a binary M x N CSR."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    false_negatives: sp.csr_matrix


def write_pairs(out: Any, users: np.ndarray, items: np.ndarray, values: np.ndarray) -> None:
    """Write H (``users``, ``items``, ``values``: equal-length arrays)."""
    out.store.write_table(
        pa.table({"user_idx": pa.array(np.asarray(users, dtype=np.int64)),
                  "item_idx": pa.array(np.asarray(items, dtype=np.int64)),
                  "plan_value": pa.array(np.asarray(values, dtype=np.float64))}, schema=AUGMENTED_PAIRS_SCHEMA),
        *out.parts, AUGMENTED_PAIRS_FILE)


def false_negatives_parts(out: Any) -> tuple[str, ...]:
    """Store parts of the G folder, where each row block writes its part (:func:`write_false_negatives_part`)."""
    return (*out.parts, FALSE_NEGATIVES_FILE)


def write_false_negatives_part(store: Any, parts: tuple[str, ...], index: int, users: np.ndarray, items: np.ndarray) -> None:
    """One row block's nonzeros of G (global user_idx, row-major) as part ``index`` of the G folder
    ``parts`` (:func:`false_negatives_parts`); :func:`load_augmentation` reads the folder whole."""
    store.write_table(pa.table({"user_idx": pa.array(np.asarray(users, dtype=np.int64)),
                                "item_idx": pa.array(np.asarray(items, dtype=np.int64))}, schema=FALSE_NEGATIVES_SCHEMA),
                      *parts, f"part-{int(index):05d}.parquet")


def write_augmentation(out: Any, users: np.ndarray, items: np.ndarray, values: np.ndarray, G: sp.spmatrix) -> None:
    """Write H (``users``, ``items``, ``values``: equal-length arrays) and the nonzeros of ``G``."""
    write_pairs(out, users, items, values)
    gr, gc = sp.csr_matrix(G).nonzero()
    out.store.write_table(
        pa.table({"user_idx": pa.array(gr.astype(np.int64)), "item_idx": pa.array(gc.astype(np.int64))},
                 schema=FALSE_NEGATIVES_SCHEMA),
        *out.parts, FALSE_NEGATIVES_FILE)


def load_augmentation(out: Any, n_users: int, n_items: int) -> Augmentation:
    """Read a committed augment output (augmented_pairs + false_negatives) for an M x N problem;
    ``ValueError`` when an index falls outside it."""
    h = out.store.read_table(*out.parts, AUGMENTED_PAIRS_FILE).to_pandas()
    fn = out.store.read_table(*out.parts, FALSE_NEGATIVES_FILE).to_pandas()
    for name, df in (("augmented_pairs", h), ("false_negatives", fn)):
        if len(df) and (df["user_idx"].max() >= n_users or df["item_idx"].max() >= n_items):
            raise ValueError(f"augment.{name} has indices outside ({n_users}, {n_items})")
    G = sp.csr_matrix((np.ones(len(fn), dtype=np.float32), (fn["user_idx"].to_numpy(), fn["item_idx"].to_numpy())),
                      shape=(n_users, n_items))
    return Augmentation(h["user_idx"].to_numpy(np.int64), h["item_idx"].to_numpy(np.int64),
                        h["plan_value"].to_numpy(np.float64), G)
