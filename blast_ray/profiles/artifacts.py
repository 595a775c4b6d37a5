"""The profiles stage's artifacts: the ``profiles/`` table and the resumable per-batch cache.

Stage output::

    profiles/   one row per item and user profile, schema ``PROFILE_SCHEMA``: kind ('item'|'user'),
                idx, text (the summarization), reasoning, engine, model, prompt_version, fallback,
                key; plus attempts, error (last parse error) and raw (the last model answer, cut to
                2,000 characters) for inspection. Many part files, in no order:
                ``<kind>-reused-<n>.parquet`` (rows reused by key, written by Spark) and
                ``<kind>-gen-<hash>.parquet`` (one finished batch, written by its Ray Data worker);
                older outputs hold one ``part-00000.parquet``. Read with ``profiles_files`` (streaming)
                or ``load_profiles`` (the whole table, sorted).
    _retry/<kind>/attempt-<n>/part-<uuid>.parquet   while the vllm engine runs: the rows whose
                answer did not parse (``RETRY_SCHEMA``), written by the parse tasks and read by the
                strict pass; deleted before the commit (``drop_retry_files``)

Cache (outside the stage prefix, ``layout.cache_parts(dataset, "profiles")``, deleted once the
output is committed)::

    <kind>/part-<uuid>.parquet   one finished batch of one kind (``PROFILE_SCHEMA``)
    requests/<kind>-<uuid>/part-<n>.parquet   the requests of one pass (read by Ray Data)

Spark's staging folder of one run (local stores; an s3 store stages in a local temp folder),
removed when the stage ends: ``layout.cache_parts(dataset, "profiles-spark", <uuid>)``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from blast_ray.store import layout

PROFILES = "profiles"
PART_FILE = "part-00000.parquet"
PROFILE_COLUMNS = ["kind", "idx", "text", "reasoning", "engine", "model", "prompt_version", "fallback", "key",
                   "attempts", "error", "raw"]
PROFILE_SCHEMA = pa.schema([
    ("kind", pa.string()), ("idx", pa.int64()), ("text", pa.string()), ("reasoning", pa.string()),
    ("engine", pa.string()), ("model", pa.string()), ("prompt_version", pa.string()), ("fallback", pa.bool_()),
    ("key", pa.string()), ("attempts", pa.int64()), ("error", pa.string()), ("raw", pa.string()),
])
CACHE_FILE_SUFFIX = ".parquet"  # anything else in the cache is a temp file of a killed write


def profiles_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` (the ``PROFILE_COLUMNS``) as an Arrow table of ``PROFILE_SCHEMA``."""
    return pa.Table.from_pandas(frame[PROFILE_COLUMNS].reset_index(drop=True), schema=PROFILE_SCHEMA, preserve_index=False)


def write_profiles(out: Any, frame: pd.DataFrame) -> int:
    """Write the profiles table of output ``out`` (one Parquet file); returns its row count."""
    table = profiles_table(frame)
    out.store.write_table(table, *out.parts, PROFILES, PART_FILE)
    return table.num_rows


def generated_part_name(kind: str, idx: list[int], keys: list[str]) -> str:
    """Part file name of one generated batch: a hash of its (idx, key) pairs, so a batch that is
    re-run (a restarted actor) rewrites its file instead of duplicating its rows."""
    from blast_ray.store.hashing import stable_hash

    return f"{kind}-gen-{stable_hash([[int(i), str(k)] for i, k in zip(idx, keys)], n=24)}.parquet"


def reused_part_name(kind: str, n: int) -> str:
    """Part file name of the ``n``-th file of reused rows of ``kind``."""
    return f"{kind}-reused-{n:05d}.parquet"


def drop_unfinished_parts(out: Any) -> int:
    """Delete the temp files (a write killed midway) from ``profiles/``; returns how many."""
    n = 0
    for name in out.store.list_files(*out.parts, PROFILES):
        if not name.endswith(".parquet"):
            out.store.delete_file(*out.parts, PROFILES, name)
            n += 1
    return n


def load_profiles_table(out: Any) -> pa.Table:
    return out.store.read_table(*out.parts, PROFILES)


def profiles_files(out: Any) -> tuple[Any, list[str]]:
    """(pyarrow filesystem, Parquet file paths) of the ``profiles`` table of ``out``, for a streaming
    reader (``ray.data.read_parquet(paths, filesystem=fs)`` or ``pyarrow.dataset``): readers that
    must not hold the whole table use this instead of :func:`load_profiles`. The table may be one
    file or many part files; every file has ``PROFILE_SCHEMA``."""
    names = sorted(n for n in out.store.list_files(*out.parts, PROFILES) if n.endswith(".parquet"))
    return out.store.fs, [out.store.path(*out.parts, PROFILES, n) for n in names]


def load_profiles(out: Any) -> pd.DataFrame:
    """The ``profiles`` table of a committed profiles StageOutput (one or many part files), sorted
    by (kind, idx). Holds the whole table: streaming readers use :func:`profiles_files`."""
    fs, paths = profiles_files(out)
    if not paths:
        return PROFILE_SCHEMA.empty_table().to_pandas()
    df = pa.concat_tables([pq.read_table(p, filesystem=fs, schema=PROFILE_SCHEMA) for p in paths]).to_pandas()
    return df.sort_values(["kind", "idx"]).reset_index(drop=True)


# ---- the resumable cache --------------------------------------------------------------------
def cache_parts(dataset: str, *sub: str) -> tuple[str, ...]:
    return layout.cache_parts(dataset, PROFILES, *sub)


def spark_staging_parts(dataset: str, run: str) -> tuple[str, ...]:
    """Spark's staging folder of one run (outside ``cache_parts``: no file there is a finished batch)."""
    return layout.cache_parts(dataset, f"{PROFILES}-spark", run)


def cache_batch_name() -> str:
    """A fresh file name for one finished batch in ``cache_parts(dataset, kind)``."""
    return f"part-{uuid.uuid4().hex}{CACHE_FILE_SUFFIX}"


def requests_parts(dataset: str, kind: str) -> tuple[str, ...]:
    """A fresh folder for the request files of one pass of ``kind`` (``request_part_name``)."""
    return cache_parts(dataset, "requests", f"{kind}-{uuid.uuid4().hex}")


# where a reused profile row came from (the ``_src`` label of the reuse join; a cache row wins)
RETRY = "_retry"  # the vllm engine's rows to retry, under the output's folder until the commit
RETRY_SCHEMA = pa.schema([("kind", pa.string()), ("idx", pa.int64()), ("key", pa.string()),
                          ("fields", pa.string()), ("strict", pa.bool_())])


def retry_parts(out_parts: tuple[str, ...], kind: str, attempt: int) -> tuple[str, ...]:
    """Where the vllm parse tasks of ``attempt`` write the request rows to retry (under the
    output's own folder; :func:`drop_retry_files` deletes them before the stage commits)."""
    return (*out_parts, RETRY, kind, f"attempt-{attempt}")


def write_retry_part(store: Any, folder: tuple[str, ...], table: pa.Table) -> None:
    """One parse task's rows to retry (``RETRY_SCHEMA``) as a new part file under ``folder``."""
    store.write_table(table.cast(RETRY_SCHEMA), *folder, f"part-{uuid.uuid4().hex}.parquet")


def retry_files(store: Any, folder: tuple[str, ...]) -> list[str]:
    """The store paths of the retry part files under ``folder``."""
    return [store.path(*folder, f) for f in sorted(store.list_files(*folder)) if f.endswith(".parquet")]


def drop_retry_files(store: Any, out_parts: tuple[str, ...]) -> None:
    store.delete_dir(*out_parts, RETRY)


REUSE_SOURCES = ("committed", "cache")


def request_part_name(n: int) -> str:
    """The n-th request file of one pass, in its ``requests_parts`` folder."""
    return f"part-{n:05d}{CACHE_FILE_SUFFIX}"


def is_cache_file(name: str) -> bool:
    return name.endswith(CACHE_FILE_SUFFIX)
