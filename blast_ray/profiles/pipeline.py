"""Profile generation as one Ray Data pipeline per pass, incremental and resumable.

Per pass (items first, then users, whose prompts contain the item profiles)::

    input fields (driver, from the ETL tables)  ->  keys  ->  drop rows already done
    read_parquet(requests) -> build prompts -> generate -> parse/retry/fallback -> per-batch cache files
    -> the stage writes profiles/ with write_parquet

Incremental: a profile's key hashes (kind, prompt version, model, input fields). Rows whose key is
in the latest committed profiles output of the dataset, or in the resumable cache
``<store>/<dataset>/cache/profiles/`` (written per batch by the workers, so a killed run keeps what
it finished), are reused; only missing or changed rows are generated.

Only TRAIN interactions feed the prompts: user prompts sample the user's train items, and the
reviews in item and user prompts are those of train interactions only (``train_reviews``): a review
written for a valid/test interaction would leak the held-out item into the features.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from blast_ray.config import ProfilesConfig
from blast_ray.profiles import artifacts
from blast_ray.profiles.artifacts import PROFILE_COLUMNS, PROFILE_SCHEMA, cache_parts  # noqa: F401  (re-exported)
from blast_ray.profiles.engines.base import answer_with_retries, parse_answer
from blast_ray.profiles.engines.template import TEMPLATE_MODEL, template_profiles
from blast_ray.profiles.parsing import fallback_profile
from blast_ray.profiles.prompts import clip, profile_key, render_prompt
from blast_ray.progress import Progress, collect_pandas
from blast_ray.store import ArtifactStore

log = logging.getLogger("blast_ray.profiles")


# ---- input fields -------------------------------------------------------------------------------
def _mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random order of (a, b) pairs: samples stay stable when unrelated rows change."""
    x = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (b.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
    return x ^ (x >> np.uint64(29))


def _review_text(summary: Any, text: Any) -> str:
    s, t = clip(summary, 120), clip(text, 400)
    return f"{s}: {t}" if s and t else (s or t)


def train_reviews(reviews: pd.DataFrame | None, interactions: pd.DataFrame) -> pd.DataFrame | None:
    """The rows of ``reviews`` whose (user_idx, item_idx) is a TRAIN interaction (``split == 'train'``).

    ``reviews``: ETL reviews table (user_idx, item_idx, text, summary); ``interactions``: ETL
    interactions with a ``split`` column. None stays None. Order and columns are kept.
    """
    if reviews is None or not len(reviews):
        return reviews
    train = interactions.loc[interactions["split"] == "train", ["user_idx", "item_idx"]]
    key = pd.MultiIndex.from_arrays([train["user_idx"].to_numpy(np.int64), train["item_idx"].to_numpy(np.int64)])
    mine = pd.MultiIndex.from_arrays([reviews["user_idx"].to_numpy(np.int64), reviews["item_idx"].to_numpy(np.int64)])
    return reviews[mine.isin(key)]


def build_item_fields(
    items: pd.DataFrame, reviews: pd.DataFrame | None, interactions: pd.DataFrame, max_reviews: int
) -> list[tuple[int, dict]]:
    """(item_idx, fields) per item: title, description, brand, categories, up to ``max_reviews``
    reviews of TRAIN interactions (``train_reviews``; a fixed pseudo-random sample per item). Extra
    item columns such as ``year``/``genres`` (MovieLens) are folded into description/categories."""
    by_item: dict[int, list[str]] = {}
    reviews = train_reviews(reviews, interactions)
    if reviews is not None and len(reviews):
        r = reviews.copy()
        r["_o"] = _mix(r["item_idx"].to_numpy(), r["user_idx"].to_numpy())
        r = r.sort_values(["item_idx", "_o"])
        for item, grp in r.groupby("item_idx", sort=False):
            texts = [t for t in (_review_text(s, x) for s, x in zip(grp.get("summary", [None] * len(grp)), grp["text"])) if t]
            if texts:
                by_item[int(item)] = texts[:max_reviews]
    out = []
    cols = set(items.columns)
    for row in items.itertuples(index=False):
        d = row._asdict()
        cats = d.get("categories")
        cats = [clip(c, 80) for c in cats if c] if cats is not None and not isinstance(cats, float) else []
        desc = clip(d.get("description"))
        if "year" in cols and clip(d.get("year")) and not desc:
            desc = f"Released in {clip(d.get('year'))}."
        out.append((int(d["item_idx"]), {
            "title": clip(d.get("title"), 200),
            "description": desc,
            "brand": clip(d.get("brand"), 100),
            "categories": cats,
            "reviews": by_item.get(int(d["item_idx"]), []),
        }))
    return out


USER_SIDE_COLUMNS = ("age", "gender", "occupation")


def build_user_fields(
    users: pd.DataFrame,
    interactions: pd.DataFrame,
    item_titles: dict[int, str],
    item_profiles: dict[int, str],
    reviews: pd.DataFrame | None,
    max_items: int,
) -> list[tuple[int, dict]]:
    """(user_idx, fields) per user from a fixed sample of the user's TRAIN items only, each with the
    user's own review of it (so a train review too)."""
    train = interactions[interactions["split"] == "train"][["user_idx", "item_idx"]].copy()
    train["_o"] = _mix(train["user_idx"].to_numpy(), train["item_idx"].to_numpy())
    train = train.sort_values(["user_idx", "_o"])
    sampled = train.groupby("user_idx", sort=False).head(max_items)
    rev: dict[tuple[int, int], str] = {}
    if reviews is not None and len(reviews):
        summ = reviews["summary"] if "summary" in reviews.columns else [None] * len(reviews)
        for u, i, s, t in zip(reviews["user_idx"], reviews["item_idx"], summ, reviews["text"]):
            txt = _review_text(s, t)
            if txt:
                rev[(int(u), int(i))] = txt
    per_user: dict[int, list[dict]] = {}
    for u, i in zip(sampled["user_idx"].to_numpy(), sampled["item_idx"].to_numpy()):
        u, i = int(u), int(i)
        per_user.setdefault(u, []).append({
            "item_idx": i,
            "title": item_titles.get(i, ""),
            "profile": clip(item_profiles.get(i, ""), 400),
            "review": rev.get((u, i), ""),
        })
    side = [c for c in USER_SIDE_COLUMNS if c in users.columns]
    out = []
    for row in users.itertuples(index=False):
        d = row._asdict()
        about = ", ".join(f"{c} {clip(d.get(c))}" for c in side if clip(d.get(c)))
        out.append((int(d["user_idx"]), {"about": about, "items": per_user.get(int(d["user_idx"]), [])}))
    return out


# ---- reuse: committed output + resumable cache --------------------------------------------------
def load_reusable(store: ArtifactStore, dataset: str, prior: pd.DataFrame | None) -> dict[str, dict]:
    """key -> profile row, from the prior committed output and the per-batch cache files."""
    frames = []
    if prior is not None and len(prior):
        frames.append(prior.assign(_src="committed"))
    skipped = 0
    for kind in ("item", "user"):
        parts = (*cache_parts(dataset), kind)
        for name in store.list_files(*parts):
            if not artifacts.is_cache_file(name):  # a temp file of a write that was killed midway
                skipped += 1
                continue
            frames.append(store.read_table(*parts, name).to_pandas().assign(_src="cache"))
    if skipped:
        log.warning("profiles cache: skipped %d unfinished file(s) left by a killed run", skipped)
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


class ProfileWorker:
    """Ray Data actor for the template, transformers and http engines: generate, parse, retry,
    fall back, and write the batch to the resumable cache. The model loads once per actor."""

    def __init__(self, cfg: dict, category: str, store_root: str, dataset: str):
        self.cfg = ProfilesConfig(**cfg)
        self.category = category
        self.store = ArtifactStore(store_root)
        self.dataset = dataset
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
        return frame


class ParseWorker:
    """vllm engine, after the LLM processor: parse answers; successes (and, on the last attempt,
    fallbacks) go to the cache; failures come back with ``ok=False`` for a stricter pass."""

    def __init__(self, cfg: dict, category: str, store_root: str, dataset: str, attempt: int):
        self.cfg = ProfilesConfig(**cfg)
        self.category = category
        self.store = ArtifactStore(store_root)
        self.dataset = dataset
        self.attempt = attempt
        self.final = attempt >= self.cfg.max_retries

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
        done = frame[np.array(ok, dtype=bool)]
        if len(done):
            write_cache_batch(self.store, self.dataset, done)
        frame["ok"] = ok
        return frame


def _parse_batch(batch: pd.DataFrame, **kw) -> pd.DataFrame:
    return ParseWorker(**kw)(batch)


# ---- one pass -----------------------------------------------------------------------------------
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


def _requests_frame(kind: str, rows: list[tuple[int, dict]], keys: list[str], strict: bool = False) -> pd.DataFrame:
    return pd.DataFrame({
        "kind": kind,
        "idx": np.array([i for i, _ in rows], dtype=np.int64),
        "key": keys,
        "fields": [json.dumps(f, sort_keys=True) for _, f in rows],
        "strict": strict,
    })


def _read_requests(store: ArtifactStore, dataset: str, frame: pd.DataFrame, ray):
    """Write the pass's requests to the cache area and open them with ray.data.read_parquet."""
    parts = artifacts.requests_parts(dataset)
    store.write_table(pa.Table.from_pandas(frame, preserve_index=False), *parts)
    # Fractional CPUs for the read: a whole-CPU read task next to an engine's CPU bundle starves
    # a 2-CPU node (the vLLM engine actor then never schedules).
    return ray.data.read_parquet(store.path(*parts), filesystem=store.fs, num_cpus=0.1), parts


def run_pass(
    kind: str,
    rows: list[tuple[int, dict]],
    cfg: ProfilesConfig,
    category: str,
    store: ArtifactStore,
    dataset: str,
    reusable: dict[str, dict],
) -> tuple[pd.DataFrame, PassStats]:
    """Profiles for ``rows`` of one kind: reuse by key, generate the rest on Ray Data."""
    from blast_ray.runtime import ensure_ray

    t0 = time.time()
    st = PassStats(kind=kind, total=len(rows))
    model = engine_model(cfg)
    keys = [profile_key(kind, cfg.prompt_version, model, f) for _, f in rows]
    reused, todo_rows, todo_keys = [], [], []
    for (idx, f), k in zip(rows, keys):
        hit = reusable.get(k)
        if hit is not None:
            r = {c: hit.get(c) for c in PROFILE_COLUMNS}
            r["idx"] = idx
            reused.append(r)
            if hit.get("_src") == "committed":
                st.reused_committed += 1
            else:
                st.reused_cache += 1
        else:
            todo_rows.append((idx, f))
            todo_keys.append(k)
    frames = [pd.DataFrame(reused, columns=PROFILE_COLUMNS)] if reused else []
    if todo_rows:
        ray = ensure_ray()
        cfg_d = _cfg_dict(cfg)
        req = _requests_frame(kind, todo_rows, todo_keys)
        ds, req_parts = _read_requests(store, dataset, req, ray)
        small = dict(num_cpus=min(0.1, cfg.num_cpus_per_actor), batch_format="pandas")
        if cfg.engine == "vllm":
            # Ray 2.60 on a 2-CPU node: the read's ListFiles task holds a whole CPU (it ignores
            # num_cpus) while the vLLM engine waits for its CPU bundle -> deadlock. The requests are
            # already in driver memory, so the vllm path starts from them.
            ds = ray.data.from_pandas(req)
            new = _run_vllm(ds, req, cfg, cfg_d, category, store, dataset, ray, small)
        else:
            ds = ds.map_batches(build_prompts, fn_kwargs=dict(category=category, prompt_version=cfg.prompt_version),
                                **small)
            ds = ds.map_batches(
                ProfileWorker,
                fn_constructor_kwargs=dict(cfg=cfg_d, category=category, store_root=store.root, dataset=dataset),
                batch_size=cfg.batch_size,
                compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
                num_cpus=cfg.num_cpus_per_actor,
                num_gpus=cfg.num_gpus_per_actor or None,
                batch_format="pandas",
            )
            new = collect_pandas(ds, Progress(f"profiles: {kind}", len(todo_rows), "rows"))[PROFILE_COLUMNS]
        store.delete_file(*req_parts)
        st.generated = len(new)
        st.generated_idx = sorted(int(i) for i in new["idx"])
        frames.append(new)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PROFILE_COLUMNS)
    out["kind"] = kind
    out = out.sort_values("idx").reset_index(drop=True)
    st.fallbacks = int(out["fallback"].astype(bool).sum()) if len(out) else 0
    st.seconds = round(time.time() - t0, 3)
    log.debug("profiles %s pass: %d rows, %d reused (%d committed, %d cache), %d generated, %d fallbacks, %.1fs",
             kind, st.total, st.reused_committed + st.reused_cache, st.reused_committed, st.reused_cache,
             st.generated, st.fallbacks, st.seconds)
    return out, st


def _cfg_dict(cfg: ProfilesConfig) -> dict:
    return cfg.model_dump()


def _run_vllm(ds, req: pd.DataFrame, cfg: ProfilesConfig, cfg_d: dict, category: str, store: ArtifactStore,
              dataset: str, ray, small: dict) -> pd.DataFrame:
    from blast_ray.profiles.engines.transformers import resolve_model_source
    from blast_ray.profiles.engines.vllm import build_vllm_processor, wants_chat_template

    source = resolve_model_source(cfg.model)
    chat = wants_chat_template(cfg.chat_template, source)
    keep = ["kind", "idx", "key", "fields", "strict"]
    done = []
    for attempt in range(cfg.max_retries + 1):
        ds = ds.map_batches(build_prompts, fn_kwargs=dict(category=category, prompt_version=cfg.prompt_version),
                            **small)
        processor = build_vllm_processor(cfg, source, keep, chat)
        ds = processor(ds)
        # a task, not an actor pool: parsing is cheap and must not hold CPUs the engine needs
        ds = ds.map_batches(
            _parse_batch,
            fn_kwargs=dict(cfg=cfg_d, category=category, store_root=store.root, dataset=dataset, attempt=attempt),
            batch_size=cfg.batch_size, **small,
        )
        res = collect_pandas(ds, Progress(f"profiles: vllm attempt {attempt + 1}", None, "rows"))
        done.append(res[res["ok"]][PROFILE_COLUMNS])
        failed = res[~res["ok"]]
        if not len(failed):
            break
        log.info("vllm engine: %d answers unparseable on attempt %d; retrying with the strict prompt",
                 len(failed), attempt + 1)
        retry = req.set_index("key").loc[failed["key"]].reset_index()[["kind", "idx", "key", "fields"]]
        retry["strict"] = True
        ds = ray.data.from_pandas(retry)
    return pd.concat(done, ignore_index=True)
