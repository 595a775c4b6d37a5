"""The features stage's artifacts: float32 vectors in row shards per modality, and the visual rejects.

Stage output::

    item_text/part-*.parquet     every item, once
    user_text/part-*.parquet     every user, once (zero vector for a user without a profile)
    item_visual/part-*.parquet   only the items whose image gave a vector
    item_visual_rejects.parquet  item_idx int64, item_id string, source string, reason string

Each shard has ``SHARD_SCHEMA``-shaped columns: ``<idx> int64`` (``item_idx`` / ``user_idx``),
``vector fixed_size_list<float32>[d]``, ``text_key string`` (the reuse key of a text vector:
:func:`text_key` of encoder, pooling and the encoded text; null for zero rows and visual vectors)
and ``profile_key string`` (the ``key`` of the profile whose text was encoded; null for raw text).
Shards are written by the encoder actors (one per encoded batch of up to ``SHARD_ROWS`` rows), by
the reuse copy (one per shard of the prior output) and by :func:`write_vectors` (chunks of
``SHARD_ROWS``). A shard's rows are in no particular order; each idx occurs once per modality.

Outputs written before the shards (one ``<modality>.parquet`` file: ``<idx>, vector``) stay
readable: every reader goes through :func:`vector_files`.

Readers: :func:`load_features` / :func:`load_feature_masks` (full arrays in idx order; the callers
in graphs, train and report), :func:`iter_vector_shards` (``(ids, float32 block)`` one shard at a
time: memory of one shard), :func:`vectors_memmap` (a read-only memory map of a local ``.npy``
copy, filled shard by shard) and :func:`iter_vector_keys` (ids and reuse keys, no vectors).
Which modalities exist, and the row counts (``n_items``/``n_users``), are in the manifest's
``extra`` (``modalities``).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FEATURE_NAMES = ("item_text", "user_text", "item_visual")
FEATURE_FILES = {name: f"{name}.parquet" for name in FEATURE_NAMES}  # the one-file layout (read only)
IDX_COLUMN = {"item_text": "item_idx", "user_text": "user_idx", "item_visual": "item_idx"}
SHARD_ROWS = 4096  # rows per written shard: 4096 x 768 x 4 B = 12 MiB at Contriever's width
SHARD_SUFFIX = ".parquet"
VISUAL_REJECTS_FILE = "item_visual_rejects.parquet"
VISUAL_REJECTS_SCHEMA = pa.schema([("item_idx", pa.int64()), ("item_id", pa.string()), ("source", pa.string()),
                                   ("reason", pa.string())])
# bump when the encoding of a given text changes without a config change (pooling code, truncation)
ENCODING_VERSION = 1


def _check(name: str) -> str:
    if name not in IDX_COLUMN:
        raise ValueError(f"feature {name!r} does not exist; features are {', '.join(FEATURE_NAMES)}")
    return name


def text_key(encoder_id: str, text: str) -> str:
    """The reuse key of one text vector: 32 hex chars of blake2b(encoder_id, text). Two rows with
    the same key have the same vector (the encoder is a pure function of its text)."""
    h = hashlib.blake2b(encoder_id.encode(), digest_size=16)
    h.update(b"\x00")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def encoder_id(model: str, pooling: str, max_length: int) -> str:
    """What, besides the text, decides a text vector (part of every :func:`text_key`)."""
    return f"{model}|{pooling}|{max_length}|v{ENCODING_VERSION}"


def vectors_schema(idx_name: str, dim: int) -> pa.Schema:
    """``idx_name`` int64 + ``vector`` fixed_size_list<float32>[dim]: what :func:`load_vectors_table` returns."""
    return pa.schema([(idx_name, pa.int64()), ("vector", pa.list_(pa.float32(), dim))])


def shard_schema(idx_name: str, dim: int) -> pa.Schema:
    """The columns of one written shard."""
    return pa.schema(list(vectors_schema(idx_name, dim)) + [("text_key", pa.string()), ("profile_key", pa.string())])


def vectors_table(idx_name: str, ids: np.ndarray, vecs: np.ndarray) -> pa.Table:
    """``idx_name`` int64 + ``vector`` fixed_size_list<float32>[d] (one row per id)."""
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or len(vecs) != len(ids):
        raise ValueError(f"vectors shape {vecs.shape} does not match {len(ids)} ids")
    flat = pa.array(vecs.reshape(-1), type=pa.float32())
    return pa.table({idx_name: pa.array(np.asarray(ids, dtype=np.int64)),
                     "vector": pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1])})


def shard_table(name: str, ids: np.ndarray, vecs: np.ndarray, text_keys=None, profile_keys=None) -> pa.Table:
    """One shard of modality ``name``: ids, float32 vectors, reuse keys (None: all null)."""
    t = vectors_table(IDX_COLUMN[_check(name)], ids, vecs)
    n = t.num_rows
    for col, values in (("text_key", text_keys), ("profile_key", profile_keys)):
        t = t.append_column(col, pa.nulls(n, pa.string()) if values is None else pa.array(list(values), pa.string()))
    return t


def table_vectors(table: pa.Table, idx_name: str, n: int | None = None, allow_missing: bool = False) -> np.ndarray:
    """(n, d) float32 rows in idx order from a vectors table; every idx in [0, n) must be present
    once (``allow_missing``: each at most once, absent rows are zero)."""
    ids = table[idx_name].to_numpy()
    vals = _column_vectors(table["vector"])
    n = (int(ids.max()) + 1 if len(ids) else 0) if n is None else n
    n_unique = len(np.unique(ids))
    in_range = not len(ids) or (ids.min() >= 0 and ids.max() < n)
    if n_unique != len(ids) or not in_range or (not allow_missing and len(ids) != n):
        raise ValueError(f"vector table keyed by {idx_name} must hold each idx in [0, {n}) exactly once; has {len(ids)} rows")
    out = np.zeros((n, vals.shape[1]), dtype=np.float32)
    out[ids] = vals
    return out


def _column_vectors(col) -> np.ndarray:
    """A (fixed-size) list<float> column as an (rows, d) float32 array."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if len(col) == 0:
        d = col.type.list_size if pa.types.is_fixed_size_list(col.type) else 0
        return np.zeros((0, d), dtype=np.float32)
    d = col.type.list_size if pa.types.is_fixed_size_list(col.type) else len(col[0])
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(col), d)


# ---- writers ---------------------------------------------------------------------------------
def shard_name(tag: str | None = None) -> str:
    """A fresh shard file name (``part-<tag>-<uuid>.parquet``): writers never collide."""
    return f"part-{tag + '-' if tag else ''}{uuid.uuid4().hex[:16]}{SHARD_SUFFIX}"


def write_shard(store: Any, parts: tuple[str, ...], name: str, table: pa.Table, tag: str | None = None) -> str:
    """Write one shard of modality ``name`` under the output at ``store``/``parts`` (picklable: the
    encoder actors call it); returns the file name."""
    file = shard_name(tag)
    store.write_table(table, *parts, _check(name), file)
    return file


def write_vectors(out: Any, name: str, ids: np.ndarray, vecs: np.ndarray, text_keys=None, profile_keys=None,
                  rows_per_shard: int = SHARD_ROWS, tag: str = "w") -> int:
    """Write modality ``name`` (item_text | user_text | item_visual) of output ``out`` from arrays,
    in shards of ``rows_per_shard`` rows; returns the number of shards."""
    _check(name)
    vecs = np.asarray(vecs)
    if vecs.ndim != 2 or len(vecs) != len(ids):
        raise ValueError(f"vectors shape {vecs.shape} does not match {len(ids)} ids")
    n_shards = 0
    for s in range(0, max(len(ids), 1), rows_per_shard):
        e = min(len(ids), s + rows_per_shard)
        write_shard(out.store, out.parts, name, shard_table(
            name, ids[s:e], vecs[s:e], None if text_keys is None else text_keys[s:e],
            None if profile_keys is None else profile_keys[s:e]), tag)
        n_shards += 1
    return n_shards


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


# ---- readers ---------------------------------------------------------------------------------
def vector_files(out: Any, name: str) -> tuple[Any, list[str]]:
    """(pyarrow filesystem, Parquet paths) of modality ``name`` of ``out``: its shards, or the one
    file of the older layout; empty when the output has no such modality."""
    _check(name)
    names = sorted(n for n in out.store.list_files(*out.parts, name) if n.endswith(SHARD_SUFFIX))
    if names:
        return out.store.fs, [out.store.path(*out.parts, name, n) for n in names]
    if out.store.exists(*out.parts, FEATURE_FILES[name]):
        return out.store.fs, [out.store.path(*out.parts, FEATURE_FILES[name])]
    return out.store.fs, []


def _read(fs, path: str, columns: list[str]) -> pa.Table:
    have = set(pq.read_schema(path, filesystem=fs).names)
    return pq.read_table(path, filesystem=fs, columns=[c for c in columns if c in have])


def iter_vector_shards(out: Any, name: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids int64 (r,), vectors float32 (r, d))`` per shard of modality ``name``, shard by shard
    (memory: one shard). Rows are in the shard's order, not idx order."""
    fs, paths = vector_files(out, name)
    idx = IDX_COLUMN[name]
    for path in paths:
        t = _read(fs, path, [idx, "vector"])
        yield t[idx].to_numpy().astype(np.int64, copy=False), _column_vectors(t["vector"])


def iter_vector_keys(out: Any, name: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids int64, text keys object array (None where absent))`` per shard: the reuse keys
    without the vectors (the one-file layout has none: all None)."""
    fs, paths = vector_files(out, name)
    idx = IDX_COLUMN[name]
    for path in paths:
        t = _read(fs, path, [idx, "text_key"])
        keys = (np.asarray(t["text_key"].to_pylist(), dtype=object) if "text_key" in t.column_names
                else np.full(t.num_rows, None, dtype=object))
        yield t[idx].to_numpy().astype(np.int64, copy=False), keys


def vector_dim(out: Any, name: str) -> int | None:
    """d of modality ``name`` (from the first shard's schema), None when it has no file."""
    fs, paths = vector_files(out, name)
    if not paths:
        return None
    typ = pq.read_schema(paths[0], filesystem=fs).field("vector").type
    if pa.types.is_fixed_size_list(typ):
        return int(typ.list_size)
    for _, block in iter_vector_shards(out, name):
        if len(block):
            return int(block.shape[1])
    return None


def load_vectors_table(out: Any, name: str, columns: list[str] | None = None) -> pa.Table:
    """Modality ``name`` as one Arrow table (default columns: ``<idx>, vector``), shards concatenated."""
    fs, paths = vector_files(out, name)
    if not paths:
        raise FileNotFoundError(f"features output {out.uri()} has no {name} vectors")
    columns = columns or [IDX_COLUMN[name], "vector"]
    return pa.concat_tables([_read(fs, p, columns) for p in paths])


def _row_count(extra: dict, name: str) -> int | None:
    return extra.get("n_items" if IDX_COLUMN[name] == "item_idx" else "n_users")


def _fill(out: Any, name: str, n: int | None, dest: np.ndarray | None, allow_missing: bool):
    """Scatter every shard of ``name`` into ``dest`` (allocated (n, d) float32 when None); checks
    each idx in [0, n) occurs once (all of them unless ``allow_missing``). Returns (array, seen)."""
    seen = None
    for ids, block in iter_vector_shards(out, name):
        if dest is None:
            if n is None:  # no row count recorded: one pass over the ids first
                n = max((int(i.max()) + 1 for i, _ in iter_vector_shards(out, name) if len(i)), default=0)
            dest = np.zeros((n, block.shape[1]), dtype=np.float32)
        if seen is None:
            seen = np.zeros(len(dest), dtype=bool)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(dest) or seen[ids].any() or len(np.unique(ids)) != len(ids)):
            raise ValueError(f"features {name} of {out.uri()} must hold each {IDX_COLUMN[name]} in [0, {len(dest)}) "
                             "at most once; a shard repeats one or leaves the range")
        dest[ids] = block
        seen[ids] = True
    if dest is None:
        raise FileNotFoundError(f"features output {out.uri()} has no {name} vectors")
    if not allow_missing and not seen.all():
        raise ValueError(f"features {name} of {out.uri()} must hold each {IDX_COLUMN[name]} in [0, {len(dest)}) "
                         f"exactly once; {int((~seen).sum())} are missing")
    return dest, seen


def load_features(out: Any) -> dict[str, np.ndarray]:
    """name -> (rows in idx order, d) float32 for each modality of a committed features output.

    Every array has one row per item (user); an item without a visual vector (image missing or
    undecodable) has a zero row: use ``load_feature_masks`` to tell them apart. Filled shard by
    shard: peak memory is the result plus one shard.
    """
    extra = out.manifest.get("extra", {})
    return {name: _fill(out, name, _row_count(extra, name), None, name == "item_visual")[0]
            for name in extra.get("modalities", [])}


def feature_names(out: Any) -> list[str]:
    """The modalities a committed features output holds (``item_text``, ``user_text``, ``item_visual``)."""
    return list(out.manifest.get("extra", {}).get("modalities", []))


def load_vectors(out: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One modality: its (n, d) float32 rows in idx order (zero where an idx has no vector) and
    the bool mask of the rows that hold a vector; filled shard by shard (peak: the result plus one
    shard). What a process that needs one feature reads, instead of ``load_features``' all."""
    return _fill(out, name, _row_count(out.manifest.get("extra", {}), name), None, name == "item_visual")


def vectors_memmap(out: Any, name: str, path: str) -> np.memmap:
    """Modality ``name`` as a read-only memory map of a local ``.npy`` file written at ``path``
    (rows in idx order, float32, zero rows where an idx has no vector): the same values as
    ``load_features(out)[name]`` without holding them in the process's anonymous memory."""
    from numpy.lib.format import open_memmap

    n = _row_count(out.manifest.get("extra", {}), name)
    d = vector_dim(out, name)
    if d is None:
        raise FileNotFoundError(f"features output {out.uri()} has no {name} vectors")
    if n is None:
        n = max((int(i.max()) + 1 for i, _ in iter_vector_shards(out, name) if len(i)), default=0)
    mm = open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    _fill(out, name, n, mm, name == "item_visual")
    mm.flush()
    del mm
    return np.load(path, mmap_mode="r")


def load_feature_masks(out: Any) -> dict[str, np.ndarray]:
    """name -> bool array, True where the row holds a real vector (False: no image for that item)."""
    extra = out.manifest.get("extra", {})
    res = {}
    for name in extra.get("modalities", []):
        fs, paths = vector_files(out, name)
        ids = [_read(fs, p, [IDX_COLUMN[name]])[IDX_COLUMN[name]].to_numpy() for p in paths]
        n = _row_count(extra, name)
        if n is None:
            n = max((int(i.max()) + 1 for i in ids if len(i)), default=0)
        mask = np.zeros(n, dtype=bool)
        for i in ids:
            mask[i] = True
        res[name] = mask
    return res
