"""The ETL stage's artifacts: its five Parquet tables, their schemas, and how to read them.

Every table is a folder of Parquet files under the ETL stage output (Spark writes one file per
partition; ``write_table`` writes one file)::

    interactions/  user_idx int64, item_idx int64, rating float64 (null if implicit),
                   timestamp int64 (null if unknown), split string in {train, valid, test}
    users/         user_idx int64, user_id string (+ optional side columns: age, gender, ...)
    items/         item_idx int64, item_id string, title, description, brand, categories
                   list<string>, image_url (+ optional columns, e.g. MovieLens year/genres)
    reviews/       user_idx int64, item_idx int64, text string, summary string
    rejects/       source string, line int64, reason string, raw string

Ids are dense and 0-based. With ``etl.id_dictionary_from`` (an earlier ETL output) the users/items
tables extend that output's tables: every earlier raw id keeps its index, new ids are appended
(:func:`load_id_dictionary`). Other stages read these tables only through :func:`load_table`
(or ``blast_ray.data.load_interactions``), never by folder name.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import pyarrow as pa

from blast_ray.data.interactions import InteractionData

INTERACTIONS = "interactions"
USERS = "users"
ITEMS = "items"
REVIEWS = "reviews"
REJECTS = "rejects"
TABLES = (INTERACTIONS, USERS, ITEMS, REVIEWS, REJECTS)

# The columns every ETL output has, in order; users and items may carry more (side columns).
SCHEMAS: dict[str, pa.Schema] = {
    INTERACTIONS: pa.schema([("user_idx", pa.int64()), ("item_idx", pa.int64()), ("rating", pa.float64()),
                             ("timestamp", pa.int64()), ("split", pa.string())]),
    USERS: pa.schema([("user_idx", pa.int64()), ("user_id", pa.string())]),
    ITEMS: pa.schema([("item_idx", pa.int64()), ("item_id", pa.string()), ("title", pa.string()),
                      ("description", pa.string()), ("brand", pa.string()), ("categories", pa.list_(pa.string())),
                      ("image_url", pa.string())]),
    REVIEWS: pa.schema([("user_idx", pa.int64()), ("item_idx", pa.int64()), ("text", pa.string()),
                        ("summary", pa.string())]),
    REJECTS: pa.schema([("source", pa.string()), ("line", pa.int64()), ("reason", pa.string()), ("raw", pa.string())]),
}
PART_FILE = "part-00000.parquet"  # the one file ``write_table`` puts in a table folder


def _check_name(name: str) -> str:
    if name not in TABLES:
        raise ValueError(f"ETL table {name!r} does not exist; tables are {', '.join(TABLES)}")
    return name


def local_table_dir(dest: str, name: str) -> str:
    """Local folder Spark writes table ``name`` into (``run_etl``'s destination layout)."""
    return os.path.join(dest, _check_name(name))


def write_table(out: Any, name: str, table: pa.Table) -> None:
    """Write ``table`` as ETL table ``name`` of the output ``out`` (any object with ``store`` and
    ``parts``, e.g. a ``StageOutput``). Its columns must start with the table's schema, in order,
    with those types (``ValueError`` naming the first mismatch otherwise)."""
    schema = SCHEMAS[_check_name(name)]
    head = pa.schema(list(table.schema)[: len(schema)])
    if not head.equals(schema):
        raise ValueError(f"ETL table {name!r}: columns {head} do not match the contract {schema}")
    out.store.write_table(table, *out.parts, name, PART_FILE)


def has_table(out: Any, name: str) -> bool:
    return out.store.exists(*out.parts, _check_name(name))


def values_by_index(table: pa.Table, index_column: str, value_column: str, n: int):
    """An object array (n,) holding ``table[value_column]`` at the rows ``table[index_column]``
    (dense ids -> raw ids / titles); an index the table does not cover keeps None."""
    import numpy as np

    out = np.full(n, None, dtype=object)
    out[table.column(index_column).to_numpy()] = np.asarray(table.column(value_column).to_pylist(), dtype=object)
    return out


def table_files(out: Any, name: str) -> tuple[Any, list[str]]:
    """(pyarrow filesystem, Parquet file paths) of ETL table ``name`` of ``out``, for streaming
    readers (``ray.data.read_parquet(paths, filesystem=fs)``, ``pyarrow.dataset``, Spark on a local
    store) that must not hold the whole table: the table may be one file or many part files."""
    names = sorted(n for n in out.store.list_files(*out.parts, _check_name(name)) if n.endswith(".parquet"))
    return out.store.fs, [out.store.path(*out.parts, name, n) for n in names]


def load_table(out: Any, name: str, columns: list[str] | None = None) -> pa.Table:
    """ETL table ``name`` of the committed output ``out`` as an Arrow table (``columns``: a subset)."""
    return out.store.read_table(*out.parts, _check_name(name), columns=columns)


def load_frame(out: Any, name: str, columns: list[str] | None = None, required: bool = True) -> pd.DataFrame | None:
    """ETL table ``name`` as a pandas frame; None when absent and not ``required``."""
    if not required and not has_table(out, name):
        return None
    return load_table(out, name, columns).to_pandas()


def load_interactions(etl_output) -> InteractionData:
    """Read the ``interactions`` table of a committed ETL ``StageOutput``."""
    df = load_frame(etl_output, INTERACTIONS, columns=["user_idx", "item_idx", "split"])
    counts = etl_output.manifest.get("row_counts", {})
    return InteractionData.from_frame(df, counts.get("users"), counts.get("items"))


# table -> (index column, raw id column) of the id dictionary
ID_COLUMNS = {USERS: ("user_idx", "user_id"), ITEMS: ("item_idx", "item_id")}


def load_id_dictionary(uri: str) -> dict[str, pd.DataFrame]:
    """The id dictionary of the ETL output at ``uri`` (local path or s3://; ``etl.id_dictionary_from``):
    {"users": frame(user_idx, user_id), "items": frame(item_idx, item_id)}, sorted by index.

    Checked: the output exists and each table is dense (indices exactly 0..n-1, raw ids unique);
    anything else is a ``ValueError`` naming ``etl.id_dictionary_from``.
    """
    from blast_ray.store import ArtifactStore

    key = "config key 'etl.id_dictionary_from'"
    if not uri.startswith("s3://") and not os.path.isdir(uri.removeprefix("file://")):
        raise ValueError(f"{key}: {uri} is not a folder; point it at a committed ETL output (or null)")
    at = ArtifactStore(uri)
    out: dict[str, pd.DataFrame] = {}
    for table, (idx, raw) in ID_COLUMNS.items():
        if not at.exists(table):
            raise ValueError(f"{key}: {uri} has no {table} table; point it at a committed ETL output (or null)")
        df = at.read_table(table, columns=[idx, raw]).to_pandas().sort_values(idx, kind="stable").reset_index(drop=True)
        if not (df[idx].to_numpy() == range(len(df))).all() or df[raw].duplicated().any() or df[raw].isna().any():
            raise ValueError(f"{key}: the {table} table of {uri} is not a dense id dictionary (indices 0..n-1, "
                             "unique non-null raw ids)")
        out[table] = df
    return out


DEGREE_BATCH_ROWS = 1 << 17  # rows per record batch of the degree scan


def _train_dataset(store: Any, parts: tuple[str, ...]):
    import pyarrow.dataset as pads

    return pads.dataset(store.path(*parts, INTERACTIONS), filesystem=store.fs, format="parquet")


def train_degrees(store: Any, parts: tuple[str, ...], n_users: int | None = None, n_items: int | None = None):
    """Train degrees ``(deg_users (M,), deg_items (N,))`` as int64, streamed over the
    ``interactions`` table of the ETL output at ``store``/``parts``: file by file, one record batch
    of ``DEGREE_BATCH_ROWS`` at a time (memory O(M + N) plus one batch, never the table; a dataset
    scan's read-ahead of batches and files added 0.34 GiB to the augment driver at 10M synthetic
    reviews, this 0.10).

    Duplicated (user, item) train rows count once per row (the ETL writes none). Without
    ``n_users``/``n_items`` the sizes follow the largest index seen."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    deg = {"u": np.zeros(int(n_users or 0), dtype=np.int64), "i": np.zeros(int(n_items or 0), dtype=np.int64)}
    for path in _train_dataset(store, parts).files:
        with store.fs.open_input_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=DEGREE_BATCH_ROWS,
                                                        columns=["user_idx", "item_idx", "split"]):
                batch = batch.filter(pc.equal(batch.column(2), "train"))
                for col, name in ((0, "u"), (1, "i")):
                    idx = batch.column(col).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
                    if not idx.size:
                        continue
                    cnt = np.bincount(idx)
                    if cnt.size > deg[name].size:
                        deg[name] = np.concatenate([deg[name], np.zeros(cnt.size - deg[name].size, dtype=np.int64)])
                    deg[name][: cnt.size] += cnt
    return deg["u"], deg["i"]


def train_rows(store: Any, parts: tuple[str, ...], start: int, stop: int):
    """(user_idx, item_idx) int64 arrays of the train interactions of users ``start <= u < stop``
    (a filtered scan: only those rows are held)."""
    import numpy as np
    import pyarrow.compute as pc

    flt = (pc.field("split") == "train") & (pc.field("user_idx") >= start) & (pc.field("user_idx") < stop)
    t = _train_dataset(store, parts).to_table(columns=["user_idx", "item_idx"], filter=flt)
    return (t.column(0).to_numpy().astype(np.int64, copy=False), t.column(1).to_numpy().astype(np.int64, copy=False))
