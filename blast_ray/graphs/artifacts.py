"""The graphs stage's artifacts: per-modality raw item kNN edges and the normalized graphs.

Stage output::

    item_knn_<modality>.parquet  src int64, dst int64, sim float32: the raw top-k neighbours of one
                                 item modality ('text' | 'visual' | 'cooc'), k rows per src
    item_graph.parquet           row int64, col int64, value float32: S_I (COO, row-major order)
    user_graph.parquet           the same for S_U; absent when the user graph was skipped

The manifest's ``extra`` lists ``item_modalities`` and ``shape`` ({"items", "users"}), which the
loaders below use to validate and to size the matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

EDGES_SCHEMA = pa.schema([("src", pa.int64()), ("dst", pa.int64()), ("sim", pa.float32())])
MATRIX_SCHEMA = pa.schema([("row", pa.int64()), ("col", pa.int64()), ("value", pa.float32())])
GRAPH_KINDS = ("item", "user")


def item_knn_file(modality: str) -> str:
    return f"item_knn_{modality}.parquet"


def graph_file(kind: str) -> str:
    if kind not in GRAPH_KINDS:
        raise ValueError(f"kind must be 'item' or 'user', got {kind!r}")
    return f"{kind}_graph.parquet"


def edges_table(cols: np.ndarray, sims: np.ndarray, rows: np.ndarray | None = None) -> pa.Table:
    """kNN edges: ``cols`` (n, k) neighbours of the rows ``rows`` (default 0..n-1), ``sims`` their similarities."""
    n, k = cols.shape
    src = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    return pa.table({"src": np.repeat(src, k), "dst": cols.reshape(-1).astype(np.int64),
                     "sim": sims.reshape(-1).astype(np.float32)}, schema=EDGES_SCHEMA)


def matrix_table(m: sp.spmatrix) -> pa.Table:
    """A sparse matrix as (row, col, value) rows sorted by (row, col)."""
    c = sp.coo_matrix(m)
    order = np.lexsort((c.col, c.row))
    return pa.table({"row": c.row[order].astype(np.int64), "col": c.col[order].astype(np.int64),
                     "value": c.data[order].astype(np.float32)}, schema=MATRIX_SCHEMA)


def write_item_knn(out: Any, modality: str, cols: np.ndarray, sims: np.ndarray, rows: np.ndarray | None = None) -> None:
    out.store.write_table(edges_table(cols, sims, rows), *out.parts, item_knn_file(modality))


def write_graph(out: Any, kind: str, m: sp.spmatrix) -> None:
    out.store.write_table(matrix_table(m), *out.parts, graph_file(kind))


def item_knn_edges(out: Any, modality: str) -> pd.DataFrame:
    """The raw kNN edges (src, dst, sim) of one item modality of a committed graphs output.

    ``KeyError`` naming the modalities it has when ``modality`` is not one of them."""
    mods = out.manifest.get("extra", {}).get("item_modalities", [])
    if modality not in mods:
        raise KeyError(f"graphs output {out.fingerprint} has no item kNN for modality {modality!r}; it has {mods}")
    return out.store.read_table(*out.parts, item_knn_file(modality)).to_pandas()


def load_item_knn(out: Any, modality: str) -> sp.csr_matrix:
    """Binary (N, N) CSR of the raw top-k neighbours of one item modality ('text'|'visual'|'cooc')."""
    t = item_knn_edges(out, modality)
    n = int(out.manifest["extra"]["shape"]["items"])
    m = sp.csr_matrix((np.ones(len(t), dtype=np.float32), (t["src"].to_numpy(), t["dst"].to_numpy())), shape=(n, n))
    m.sort_indices()
    return m


def has_user_graph(out: Any) -> bool:
    return out.store.exists(*out.parts, graph_file("user"))


def load_graph(out: Any, kind: str) -> sp.csr_matrix:
    """The normalized S_I ('item') or S_U ('user') as CSR float32."""
    name = graph_file(kind)
    extra = out.manifest.get("extra", {})
    n = int(extra["shape"]["items" if kind == "item" else "users"])
    if kind == "user" and not has_user_graph(out):
        raise FileNotFoundError(f"graphs output {out.fingerprint} has no user graph ({extra.get('user_graph')})")
    t = out.store.read_table(*out.parts, name)
    m = sp.csr_matrix((t["value"].to_numpy(), (t["row"].to_numpy(), t["col"].to_numpy())), shape=(n, n), dtype=np.float32)
    m.sort_indices()
    return m
