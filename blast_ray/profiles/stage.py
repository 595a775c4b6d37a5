"""The profiles stage: ``run(ctx, out)`` -> ``profiles/`` Parquet (one row per item and user).

Output columns (contract, ``blast_ray.profiles.artifacts.PROFILE_SCHEMA``): kind ('item'|'user'),
idx, text (the summarization), reasoning, engine, model, prompt_version, fallback, key; plus
attempts, error (last parse error) and raw (the last model answer, cut to 2,000 characters).
"""

from __future__ import annotations

import logging
import time

import pandas as pd

from blast_ray.etl import artifacts as etl_artifacts
from blast_ray.profiles.artifacts import PROFILE_COLUMNS, load_profiles, write_profiles
from blast_ray.profiles.pipeline import (
    build_item_fields,
    build_user_fields,
    cache_parts,
    engine_model,
    load_reusable,
    run_pass,
)
from blast_ray.store import latest_output

log = logging.getLogger("blast_ray.profiles")

TEMPLATE_WARNING = (
    "profiles.engine=template: NO LLM is used; profiles are deterministic texts built from the item/user "
    "fields. Set profiles.engine=vllm (GPU) or transformers/http for LLM profiles."
)


def _table(etl, name: str) -> pd.DataFrame | None:
    return etl_artifacts.load_frame(etl, name, required=False)


def run(ctx, out) -> dict:
    cfg = ctx.cfg.profiles
    category = ctx.cfg.dataset.category
    store = ctx.store
    etl = ctx.require("etl")
    t0 = time.time()
    items = _table(etl, etl_artifacts.ITEMS)
    users = _table(etl, etl_artifacts.USERS)
    inter = _table(etl, etl_artifacts.INTERACTIONS)
    reviews = _table(etl, etl_artifacts.REVIEWS)
    if items is None or users is None or inter is None:
        raise RuntimeError(f"ETL output {etl.uri()} lacks items/users/interactions tables")
    if cfg.engine == "template":
        log.warning(TEMPLATE_WARNING)
    if cfg.sample_items is not None:
        items = items.sort_values("item_idx").head(cfg.sample_items)
    if cfg.sample_users is not None:
        users = users.sort_values("user_idx").head(cfg.sample_users)

    prior_out = latest_output(store, ctx.dataset, "profiles")
    prior = load_profiles(prior_out) if prior_out is not None and prior_out.fingerprint != out.fingerprint else None
    reusable = load_reusable(store, ctx.dataset, prior)
    t_read = time.time() - t0

    item_rows = build_item_fields(items, reviews, cfg.max_reviews_per_item)
    item_prof, st_i = run_pass("item", item_rows, cfg, category, store, ctx.dataset, reusable)

    all_items = _table(etl, etl_artifacts.ITEMS)
    titles = {int(i): str(t) if isinstance(t, str) else "" for i, t in zip(all_items["item_idx"], all_items["title"])}
    profile_text = dict(zip(item_prof["idx"].astype(int), item_prof["text"]))
    user_rows = build_user_fields(users, inter, titles, profile_text, reviews, cfg.max_items_per_user)
    user_prof, st_u = run_pass("user", user_rows, cfg, category, store, ctx.dataset, reusable)

    final = pd.concat([item_prof, user_prof], ignore_index=True)[PROFILE_COLUMNS]
    final["idx"] = final["idx"].astype("int64")
    final["fallback"] = final["fallback"].astype(bool)
    final["attempts"] = final["attempts"].astype("int64")
    write_profiles(out, final)
    # Everything is in the output now: the per-batch cache of this dataset has served its purpose.
    store.delete_dir(*cache_parts(ctx.dataset))

    n = len(final)
    fb = int(final["fallback"].sum())
    extra = {
        "engine": cfg.engine,
        "model": engine_model(cfg),
        "prompt_version": cfg.prompt_version,
        "category": category,
        "fallback_rate": round(fb / n, 4) if n else 0.0,
        "fallbacks": fb,
        "generated": {"item": st_i.generated, "user": st_u.generated},
        "generated_idx": {"item": st_i.generated_idx[:1000], "user": st_u.generated_idx[:1000]},
        "reused_committed": {"item": st_i.reused_committed, "user": st_u.reused_committed},
        "reused_cache": {"item": st_i.reused_cache, "user": st_u.reused_cache},
        "reused_from": prior_out.fingerprint if prior is not None else None,
    }
    if cfg.engine == "template":
        extra["engine_warning"] = TEMPLATE_WARNING
    return {
        "row_counts": {"profiles": n, "item_profiles": len(item_prof), "user_profiles": len(user_prof)},
        "timings": {"read_s": round(t_read, 3), "items_s": st_i.seconds, "users_s": st_u.seconds},
        "extra": extra,
        "metrics": {"fallback_rate": extra["fallback_rate"]},
    }
