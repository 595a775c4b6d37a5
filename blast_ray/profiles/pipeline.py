"""Profile generation as one Ray Data pipeline per pass, incremental and resumable.

Per pass (items first, then users, whose prompts contain the item profiles)::

    Spark (profiles/requests.py): request rows (kind, idx, key, fields) -> anti-join with the
        reusable keys -> reused rows written as output part files; the rest as request files
    Ray Data: read_parquet(requests) -> build prompts -> generate -> parse/retry/fallback
        -> each batch written by its worker to the resumable cache AND as a part file of the
           output's ``profiles/`` folder; the driver only counts (kind, idx, fallback) per batch

Incremental: a profile's key hashes (kind, prompt version, model, input fields). Rows whose key is
in the latest committed profiles output of the dataset, or in the resumable cache
``<store>/<dataset>/cache/profiles/`` (written per batch by the workers, so a killed run keeps what
it finished), are reused; only missing or changed rows are generated.

Only TRAIN interactions feed the prompts (``profiles/fields.py``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from blast_ray.config import ProfilesConfig
from blast_ray.profiles import artifacts
from blast_ray.profiles.artifacts import PROFILE_COLUMNS, PROFILE_SCHEMA, cache_parts  # noqa: F401  (re-exported)
from blast_ray.profiles.engines.base import answer_with_retries, parse_answer
from blast_ray.profiles.engines.template import TEMPLATE_MODEL, template_profiles
from blast_ray.profiles.parsing import fallback_profile
from blast_ray.profiles.prompts import render_prompt
from blast_ray.progress import Progress
from blast_ray.store import ArtifactStore

log = logging.getLogger("blast_ray.profiles")


# ---- input fields: profiles/fields.py (pure), profiles/requests.py (Spark) --------------------
from blast_ray.profiles.fields import (  # noqa: E402,F401  (re-exported: tests and older callers)
    USER_SIDE_COLUMNS,
    _mix,
    _review_text,
    build_item_fields,
    build_user_fields,
    train_reviews,
)


# ---- reuse: committed output + resumable cache --------------------------------------------------
def reusable_files(store: ArtifactStore, dataset: str, prior_out: Any | None) -> dict[str, list[str]]:
    """Parquet files holding reusable profile rows (``PROFILE_SCHEMA``), by source: {"committed":
    the prior committed output's parts (``profiles_files``), "cache": this dataset's finished
    per-batch cache files}. Temp files of a write that was killed midway are skipped (counted,
    logged). Paths are for ``store.fs``."""
    out: dict[str, list[str]] = {"committed": [], "cache": []}
    if prior_out is not None:
        out["committed"] = artifacts.profiles_files(prior_out)[1]
    skipped = 0
    for kind in ("item", "user"):
        parts = (*cache_parts(dataset), kind)
        for name in store.list_files(*parts):
            if not artifacts.is_cache_file(name):  # a temp file of a write that was killed midway
                skipped += 1
                continue
            out["cache"].append(store.path(*parts, name))
    if skipped:
        log.warning("profiles cache: skipped %d unfinished file(s) left by a killed run", skipped)
    return out


def load_reusable(store: ArtifactStore, dataset: str, prior: pd.DataFrame | None) -> dict[str, dict]:
    """key -> profile row, from ``prior`` and the per-batch cache files (small data and tests only:
    the stage joins the files of :func:`reusable_files` in Spark instead)."""
    frames = []
    if prior is not None and len(prior):
        frames.append(prior.assign(_src="committed"))
    for path in reusable_files(store, dataset, None)["cache"]:
        frames.append(pq.read_table(path, filesystem=store.fs).to_pandas().assign(_src="cache"))
    if not frames:
        return {}
    df = pd.concat(frames, ignore_index=True)
    df = df.drop_duplicates("key", keep="last")
    return {k: r for k, r in zip(df["key"], df.to_dict("records"))}


# ---- the Ray Data workers -----------------------------------------------------------------------
def build_prompts(batch: pd.DataFrame, category: str, prompt_version: str) -> pd.DataFrame:
    """Ray Data map_batches step: render each row's prompt from its fields."""
    batch = batch.copy()
    batch["prompt"] = [
        render_prompt(k, json.loads(f), category, prompt_version, strict=bool(s))
        for k, f, s in zip(batch["kind"], batch["fields"], batch["strict"])
    ]
    return batch


def _result_frame(batch: pd.DataFrame, results: list[dict], engine: str, model: str, prompt_version: str) -> pd.DataFrame:
    return pd.DataFrame({
        "kind": batch["kind"].astype(str).to_numpy(),
        "idx": batch["idx"].astype("int64").to_numpy(),
        "text": [r["text"] for r in results],
        "reasoning": [r["reasoning"] for r in results],
        "engine": engine,
        "model": model,
        "prompt_version": prompt_version,
        "fallback": [bool(r["fallback"]) for r in results],
        "key": batch["key"].astype(str).to_numpy(),
        "attempts": [int(r["attempts"]) for r in results],
        "error": [r.get("error", "") for r in results],
        "raw": [r.get("raw", "") for r in results],
    })[PROFILE_COLUMNS]


def write_cache_batch(store: ArtifactStore, dataset: str, frame: pd.DataFrame) -> None:
    """One Parquet file per finished batch and kind: what a killed run keeps."""
    for kind, part in frame.groupby("kind"):
        table = pa.Table.from_pandas(part.reset_index(drop=True), schema=PROFILE_SCHEMA, preserve_index=False)
        store.write_table(table, *cache_parts(dataset, str(kind)), artifacts.cache_batch_name())


def write_output_batch(store: ArtifactStore, out_parts: tuple[str, ...], frame: pd.DataFrame) -> None:
    """One finished batch of one kind as a part file of the output's ``profiles/`` table. The name
    hashes the batch's (idx, key) pairs: a batch that Ray Data re-runs (a killed actor) rewrites
    the same file instead of adding a second copy of its rows."""
    for kind, part in frame.groupby("kind"):
        name = artifacts.generated_part_name(str(kind), part["idx"].astype("int64").tolist(), part["key"].astype(str).tolist())
        store.write_table(artifacts.profiles_table(part), *out_parts, artifacts.PROFILES, name)


class ProfileWorker:
    """Ray Data actor for the template, transformers and http engines: generate, parse, retry,
    fall back, and write the batch to the resumable cache and to the output's ``profiles/``
    folder. Returns only (kind, idx, fallback) per row (the driver counts). The model loads once
    per actor."""

    def __init__(self, cfg: dict, category: str, store_root: str, dataset: str, out_parts: tuple[str, ...]):
        self.cfg = ProfilesConfig(**cfg)
        self.category = category
        self.store = ArtifactStore(store_root)
        self.dataset = dataset
        self.out_parts = tuple(out_parts)
        c = self.cfg
        if c.engine == "template":
            self.gen = None
        elif c.engine == "transformers":
            from blast_ray.profiles.engines.transformers import TransformersGenerator

            threads = max(1, int(round(c.num_cpus_per_actor)))
            self.gen = TransformersGenerator(c.model, c.max_new_tokens, c.temperature, c.device, num_threads=threads)
        elif c.engine == "http":
            from blast_ray.profiles.engines.http import HttpGenerator

            self.gen = HttpGenerator(c.endpoint, c.model, c.max_new_tokens, c.temperature, c.http_concurrency,
                                     c.http_timeout_s)
        else:
            raise ValueError(f"ProfileWorker does not run engine {c.engine!r} (vllm uses ray.data.llm)")

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        kinds = batch["kind"].astype(str).tolist()
        fields = [json.loads(f) for f in batch["fields"]]
        c = self.cfg
        if self.gen is None:
            results = template_profiles(kinds, fields, self.category)
            model = TEMPLATE_MODEL
        else:
            results = answer_with_retries(self.gen, kinds, fields, self.category, c.prompt_version, c.max_retries)
            model = c.model
        frame = _result_frame(batch, results, c.engine, model, c.prompt_version)
        write_cache_batch(self.store, self.dataset, frame)
        write_output_batch(self.store, self.out_parts, frame)
        return frame[["kind", "idx", "fallback"]]


class ParseWorker:
    """vllm engine, after the LLM processor: parse answers; successes (and, on the last attempt,
    fallbacks) go to the cache and the output; failures are written, as request rows with the
    strict flag, to a part file under ``retry_parts`` for a stricter pass. Only ``kind, idx,
    fallback, ok`` come back (no fields, no text): the driver never holds the rows to retry."""

    def __init__(self, cfg: dict, category: str, store_root: str, dataset: str, attempt: int,
                 out_parts: tuple[str, ...], retry_to: tuple[str, ...] = ()):
        self.cfg = ProfilesConfig(**cfg)
        self.category = category
        self.store = ArtifactStore(store_root)
        self.dataset = dataset
        self.attempt = attempt
        self.final = attempt >= self.cfg.max_retries
        self.out_parts = tuple(out_parts)
        self.retry_to = tuple(retry_to)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        results, ok = [], []
        for kind, f, strict, ans in zip(batch["kind"], batch["fields"], batch["strict"], batch["generated_text"]):
            parsed, why = parse_answer(str(ans), bool(strict))
            if parsed is not None:
                results.append({"text": parsed["summarization"], "reasoning": parsed["reasoning"], "fallback": False,
                                "attempts": self.attempt + 1, "error": why, "raw": str(ans)[:2000]})
                ok.append(True)
            else:
                fb = fallback_profile(str(kind), json.loads(f), self.category)
                results.append({"text": fb["summarization"], "reasoning": fb["reasoning"], "fallback": True,
                                "attempts": self.attempt + 1, "error": why, "raw": str(ans)[:2000]})
                ok.append(self.final)
        frame = _result_frame(batch, results, "vllm", self.cfg.model, self.cfg.prompt_version)
        ok_mask = np.array(ok, dtype=bool)
        done = frame[ok_mask]
        if len(done):
            write_cache_batch(self.store, self.dataset, done)
            write_output_batch(self.store, self.out_parts, done)
        if (~ok_mask).any():
            if not self.retry_to:
                raise ValueError("ParseWorker: rows to retry but no retry_to folder")
            todo = batch.loc[~ok_mask]
            artifacts.write_retry_part(self.store, self.retry_to, pa.table({
                "kind": todo["kind"].astype(str).to_numpy(), "idx": todo["idx"].to_numpy(np.int64),
                "key": todo["key"].astype(str).to_numpy(), "fields": todo["fields"].astype(str).to_numpy(),
                "strict": np.ones(len(todo), dtype=bool)}))
        return pd.DataFrame({"kind": frame["kind"].to_numpy(), "idx": frame["idx"].to_numpy(),
                             "fallback": frame["fallback"].to_numpy(), "ok": ok_mask})


def _parse_batch(batch: pd.DataFrame, **kw) -> pd.DataFrame:
    return ParseWorker(**kw)(batch)


# ---- one pass -----------------------------------------------------------------------------------
GENERATED_IDX_KEPT = 1000  # the manifest lists the smallest generated indices, up to this many


@dataclass
class PassStats:
    kind: str
    total: int = 0
    reused_committed: int = 0
    reused_cache: int = 0
    generated: int = 0
    fallbacks: int = 0
    seconds: float = 0.0
    generated_idx: list[int] = field(default_factory=list)


def engine_model(cfg: ProfilesConfig) -> str:
    return TEMPLATE_MODEL if cfg.engine == "template" else cfg.model


def generate(
    kind: str,
    request_paths: list[str],
    n_requests: int,
    cfg: ProfilesConfig,
    category: str,
    store: ArtifactStore,
    dataset: str,
    out_parts: tuple[str, ...],
) -> int:
    """Generate the profiles of the request rows in the Parquet files ``request_paths`` (on
    ``store.fs``) on Ray Data; the workers write each finished batch to the cache and to the
    output's ``profiles/`` folder. Returns the number of rows written (checked == ``n_requests``).
    The driver sees only (kind, idx, fallback) per row, batch by batch."""
    from blast_ray.runtime import ensure_ray

    ray = ensure_ray()
    cfg_d = _cfg_dict(cfg)
    small = dict(num_cpus=min(0.1, cfg.num_cpus_per_actor), batch_format="pandas")
    progress = Progress(f"profiles: {kind}", n_requests, "rows")
    if cfg.engine == "vllm":
        n = _run_vllm(kind, request_paths, cfg, cfg_d, category, store, dataset, out_parts, ray, small, progress)
    else:
        check_read_fits(ray.cluster_resources().get("CPU", 0.0), cfg.concurrency, cfg.num_cpus_per_actor)
        # Fractional CPUs for the read: a whole-CPU read task next to an engine's CPU bundle starves
        # a 2-CPU node.
        ds = ray.data.read_parquet(request_paths, filesystem=store.fs, num_cpus=0.1)
        ds = ds.map_batches(build_prompts, fn_kwargs=dict(category=category, prompt_version=cfg.prompt_version),
                            **small)
        ds = ds.map_batches(
            ProfileWorker,
            fn_constructor_kwargs=dict(cfg=cfg_d, category=category, store_root=store.root, dataset=dataset,
                                       out_parts=tuple(out_parts)),
            batch_size=cfg.batch_size,
            compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
            num_cpus=cfg.num_cpus_per_actor,
            num_gpus=cfg.num_gpus_per_actor or None,
            batch_format="pandas",
        )
        n = 0
        for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
            n += len(batch)
            progress.update(len(batch))
        progress.close()
    if n != n_requests:
        raise RuntimeError(f"profiles {kind} pass: {n} rows generated for {n_requests} requests")
    return n


def check_read_fits(cluster_cpus: float, concurrency: int, num_cpus_per_actor: float) -> None:
    """Fail fast where the engine actor pool would leave under one CPU for the request read.

    ``ray.data.read_parquet`` plans a ListFiles task that takes a whole CPU whatever ``num_cpus``
    says (Ray 2.60); an actor pool of ``concurrency`` x ``num_cpus_per_actor`` that leaves less than
    one of the cluster's ``cluster_cpus`` never lets it run: the pass hangs (seen with 1.5 on a
    2-CPU node). A cluster smaller than the pool (no CPU reported yet, or an autoscaler still adding
    nodes) is not judged.
    """
    pool = concurrency * num_cpus_per_actor
    if cluster_cpus >= pool and cluster_cpus - pool < 1.0:
        raise ValueError(
            f"profiles.num_cpus_per_actor x profiles.concurrency = {pool:g} of the cluster's {cluster_cpus:g} "
            f"CPUs leaves under 1 CPU for the request read (the pass would hang): set "
            f"profiles.num_cpus_per_actor to at most {max(cluster_cpus - 1.0, 0.0) / concurrency:g} or add CPUs")


def _cfg_dict(cfg: ProfilesConfig) -> dict:
    return cfg.model_dump()


def _requests_dataset(ray, request_paths: list[str], fs):
    """The requests as a Ray dataset WITHOUT a read task: Ray 2.60 on a 2-CPU node: the read's
    ListFiles task holds a whole CPU (it ignores num_cpus) while the vLLM engine waits for its CPU
    bundle -> deadlock. Each request file (one Spark partition) is read by the driver, one at a
    time, and put in the object store."""
    refs = [ray.put(pq.read_table(p, filesystem=fs)) for p in request_paths]
    return ray.data.from_arrow_refs(refs)


def _run_vllm(kind: str, request_paths: list[str], cfg: ProfilesConfig, cfg_d: dict, category: str,
              store: ArtifactStore, dataset: str, out_parts: tuple[str, ...], ray, small: dict,
              progress: Progress) -> int:
    """The vllm engine through ``ray.data.llm``; rows whose answer does not parse are retried with
    the strict prompt: the parse tasks write them to part files (``retry_parts``) that the next
    pass reads, so the driver holds counts only. Returns rows written."""
    from blast_ray.profiles.engines.transformers import resolve_model_source
    from blast_ray.profiles.engines.vllm import wants_chat_template

    source = resolve_model_source(cfg.model)
    chat = wants_chat_template(cfg.chat_template, source)
    keep = ["kind", "idx", "key", "fields", "strict"]
    ds = _requests_dataset(ray, request_paths, store.fs)
    written = 0
    try:
        written = _vllm_passes(kind, ds, cfg, cfg_d, category, store, dataset, out_parts, ray, small, progress,
                               source, chat, keep)
    finally:
        artifacts.drop_retry_files(store, out_parts)
    progress.close()
    return written


def _vllm_passes(kind: str, ds, cfg: ProfilesConfig, cfg_d: dict, category: str, store: ArtifactStore, dataset: str,
                 out_parts: tuple[str, ...], ray, small: dict, progress: Progress, source: str, chat: bool,
                 keep: list[str]) -> int:
    """The generate -> parse passes of :func:`_run_vllm` (attempt 0, then the strict retries of
    the rows that did not parse, read back from the parse tasks' retry files)."""
    from blast_ray.profiles.engines.vllm import build_vllm_processor

    written = 0
    for attempt in range(cfg.max_retries + 1):
        ds = ds.map_batches(build_prompts, fn_kwargs=dict(category=category, prompt_version=cfg.prompt_version),
                            **small)
        processor = build_vllm_processor(cfg, source, keep, chat)
        ds = processor(ds)
        # a task, not an actor pool: parsing is cheap and must not hold CPUs the engine needs
        ds = ds.map_batches(
            _parse_batch,
            fn_kwargs=dict(cfg=cfg_d, category=category, store_root=store.root, dataset=dataset, attempt=attempt,
                           out_parts=tuple(out_parts), retry_to=artifacts.retry_parts(out_parts, kind, attempt)),
            batch_size=cfg.batch_size, **small,
        )
        failed = 0
        for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
            ok = batch["ok"].to_numpy(bool)
            written += int(ok.sum())
            progress.update(int(ok.sum()))
            failed += int((~ok).sum())
        if not failed:
            break
        log.info("vllm engine: %d answers unparseable on attempt %d; retrying with the strict prompt",
                 failed, attempt + 1)
        folder = artifacts.retry_parts(out_parts, kind, attempt)
        paths = artifacts.retry_files(store, folder)
        n_files = sum(pq.ParquetFile(p, filesystem=store.fs).metadata.num_rows for p in paths)
        if n_files != failed:
            raise RuntimeError(f"vllm engine: {failed} rows to retry, {n_files} in the retry files of {store.path(*folder)}")
        ds = _requests_dataset(ray, paths, store.fs)
    return written
