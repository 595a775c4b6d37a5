"""The train stage's artifacts: file names, Arrow schema, writers and readers. Every other module
reads a train output only through these functions.

A train output (a committed ``StageOutput``, or anything with ``store`` and ``parts``) holds:

- ``model.pt``: {"state_dict", "config", "n_users", "n_items"} of the best validation epoch;
- ``users.npy`` (M, d) / ``items.npy`` (N, d) float32: the final representations h_u, f_i;
- ``history.parquet``: one row per epoch (:data:`HISTORY_SCHEMA` + one float64 column per
  validation metric, ``valid.<metric>@<k>``, null on epochs without validation);
- ``metrics.json``: flat {"valid.recall@20": ..., "test.recall@20": ..., "best_epoch": ...}.

Training checkpoints live outside the stage output, at :func:`checkpoint_parts`.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

MODEL_FILE = "model.pt"
USERS_FILE = "users.npy"
ITEMS_FILE = "items.npy"
HISTORY_FILE = "history.parquet"
METRICS_FILE = "metrics.json"

# Checkpoints (not part of the stage output).
CHECKPOINT_STATE_FILE = "train_state.pt"  # inside a Ray Train checkpoint directory
CHECKPOINT_RESTARTS_FILE = "restarts.json"  # in each Ray Train checkpoint: {"restarts": starts from a checkpoint so far}
CHECKPOINT_POINTER = "LATEST"  # single process: names the newest state file
SINGLE_PROCESS_DIR = "single"

HISTORY_SCHEMA = pa.schema([
    ("epoch", pa.int64()),
    ("loss", pa.float64()),
    ("train_seconds", pa.float64()),
    ("triples", pa.int64()),
    ("eval_seconds", pa.float64()),
    ("seconds", pa.float64()),
    ("steps", pa.int64()),  # optimizer steps of the epoch per worker (inputs.step_plan)
    ("batch_size", pa.int64()),  # triples per step per worker
    ("lr", pa.float64()),  # the learning rate used (train.lr x the batch rule's factor)
    ("allreduce_bytes", pa.int64()),  # DDP gradient bytes all-reduced in the epoch (0 for one worker)
])


def checkpoint_parts(dataset: str, fingerprint: str) -> tuple[str, ...]:
    """Store path parts of the checkpoints of the train output ``fingerprint`` (from
    :func:`blast_ray.store.layout.checkpoint_parts`; Ray Train uses ``parts[:-1]`` as storage path
    and ``parts[-1]`` as run name, the single process a ``single/`` folder below ``parts``)."""
    from blast_ray.store import layout

    return layout.checkpoint_parts(dataset, fingerprint)


def checkpoint_file(epoch: int) -> str:
    """Name of the single-process state file written after ``epoch``."""
    return f"state-{int(epoch):06d}.pt"


# ---- model.pt -----------------------------------------------------------------------------------
def model_bytes(state_dict: dict[str, torch.Tensor], config: dict[str, Any], n_users: int, n_items: int) -> bytes:
    buf = io.BytesIO()
    torch.save({"state_dict": state_dict, "config": config, "n_users": int(n_users), "n_items": int(n_items)}, buf)
    return buf.getvalue()


def write_model(out, state_dict: dict[str, torch.Tensor], config: dict[str, Any], n_users: int, n_items: int) -> None:
    out.store.write_bytes(model_bytes(state_dict, config, n_users, n_items), *out.parts, MODEL_FILE)


def load_model(output) -> dict[str, Any]:
    """The ``model.pt`` dict of a train output (weights-only load: nothing is unpickled).
    Raises FileNotFoundError when the output has no model."""
    if not output.store.exists(*output.parts, MODEL_FILE):
        raise FileNotFoundError(f"{output.store.uri(*output.parts)} has no {MODEL_FILE}")
    return torch.load(io.BytesIO(output.store.read_bytes(*output.parts, MODEL_FILE)), map_location="cpu", weights_only=True)


class _At:
    """A train output given by URI (local path or s3://...)."""

    def __init__(self, uri: str):
        from blast_ray.store import ArtifactStore

        self.store, self.parts = ArtifactStore(uri), ()


def load_model_uri(uri: str) -> dict[str, Any]:
    """:func:`load_model` of the train output at ``uri`` (``train.warm_start_from``)."""
    return load_model(_At(uri))


# ---- users.npy / items.npy ----------------------------------------------------------------------
def _npy_bytes(arr: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, np.asarray(arr, dtype=np.float32), allow_pickle=False)
    return b.getvalue()


def write_embeddings(out, users: np.ndarray, items: np.ndarray) -> None:
    """users (M, d), items (N, d) -> users.npy / items.npy (float32)."""
    out.store.write_bytes(_npy_bytes(users), *out.parts, USERS_FILE)
    out.store.write_bytes(_npy_bytes(items), *out.parts, ITEMS_FILE)


def load_embeddings(output) -> tuple[np.ndarray, np.ndarray]:
    """(users (M, d), items (N, d)) float32 final representations of a train output."""
    s = output.store
    u = np.load(io.BytesIO(s.read_bytes(*output.parts, USERS_FILE)), allow_pickle=False)
    i = np.load(io.BytesIO(s.read_bytes(*output.parts, ITEMS_FILE)), allow_pickle=False)
    return u, i


def _local_npy(output, name: str) -> str:
    """An OS path of ``name`` of the train output that ``np.load(mmap_mode='r')`` can map: the file
    itself in a local store; for S3 a copy in a per-node cache (``$TMPDIR/blast-ray-mmap/<hash of
    the URI>/``, written to a temp name then renamed, so actors of one node share one copy and
    the OS page cache)."""
    import hashlib
    import os
    import tempfile

    store = output.store
    if not getattr(store, "is_s3", False):
        return store.path(*output.parts, name)
    uri = store.uri(*output.parts, name)
    folder = os.path.join(tempfile.gettempdir(), "blast-ray-mmap", hashlib.sha1(uri.encode()).hexdigest()[:16])
    target = os.path.join(folder, name)
    if not os.path.exists(target):
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(store.read_bytes(*output.parts, name))
        os.replace(tmp, target)
    return target


def mmap_embeddings(output) -> tuple[np.ndarray, np.ndarray]:
    """(users (M, d), items (N, d)) float32 of a train output as read-only memory maps
    (``np.load(mmap_mode='r')``): rows are paged in when indexed, and processes of one node share
    the pages (the recommend actors), instead of each loading both tables whole."""
    u = np.load(_local_npy(output, USERS_FILE), mmap_mode="r", allow_pickle=False)
    i = np.load(_local_npy(output, ITEMS_FILE), mmap_mode="r", allow_pickle=False)
    return u, i


# ---- history.parquet ----------------------------------------------------------------------------
def history_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Per-epoch rows -> a table with :data:`HISTORY_SCHEMA` first, then float64 ``valid.*`` columns."""
    extra = sorted({k for r in rows for k in r if k not in HISTORY_SCHEMA.names})
    schema = pa.schema(list(HISTORY_SCHEMA) + [pa.field(k, pa.float64()) for k in extra])
    cols = {name: [r.get(name) for r in rows] for name in schema.names}
    return pa.Table.from_pydict(cols, schema=schema)


def write_history(out, rows: list[dict[str, Any]]) -> None:
    out.store.write_table(history_table(rows), *out.parts, HISTORY_FILE)


def has_history(output) -> bool:
    return output.store.exists(*output.parts, HISTORY_FILE)


def load_history(output) -> pd.DataFrame:
    """The per-epoch history of a train output (NaN where an epoch had no validation)."""
    return output.store.read_table(*output.parts, HISTORY_FILE).to_pandas()


# ---- metrics.json -------------------------------------------------------------------------------
def write_metrics(out, metrics: dict[str, Any]) -> None:
    out.store.write_text(json.dumps(metrics, indent=1), *out.parts, METRICS_FILE)


def load_metrics(output) -> dict[str, Any]:
    return json.loads(output.store.read_text(*output.parts, METRICS_FILE))


# ---- other train outputs ------------------------------------------------------------------------
def committed_train_manifests(store, dataset: str, etl_fingerprint: str) -> list[dict[str, Any]]:
    """Manifests of every committed train output (any model) of ``dataset`` whose ETL input is
    ``etl_fingerprint`` (the report's "same split" comparison rows), newest first."""
    from blast_ray.store import layout

    return [out.manifest for out in layout.committed_outputs(store, dataset, "train")
            if out.inputs.get("etl") == etl_fingerprint]
