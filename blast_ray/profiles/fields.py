"""The input fields of item and user prompts (pure functions; no Spark, no Ray).

One row's fields are built by :func:`item_fields` / :func:`user_fields`; the Spark request
builder (``profiles/requests.py``) calls them per partition and the pandas builders below call them
for the whole (small) tables. Both give the same dicts, hence the same ``json.dumps(sort_keys=True)``
and the same ``profile_key`` (tested on ml-100k and All_Beauty in ``tests/test_profiles_requests.py``).

Only TRAIN interactions feed the prompts: user prompts sample the user's train items, and the
reviews in item and user prompts are those of train interactions only (``train_reviews``): a review
written for a valid/test interaction would leak the held-out item into the features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from blast_ray.profiles.prompts import clip

USER_SIDE_COLUMNS = ("age", "gender", "occupation")


def _mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random order of (a, b) pairs: samples stay stable when unrelated rows change."""
    x = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (b.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
    return x ^ (x >> np.uint64(29))


def mix_order(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``_mix(a, b)`` as int64 whose SIGNED order is the uint64 order of ``_mix`` (the sign bit
    flipped): a sort key for engines without unsigned 64-bit integers (Spark)."""
    with np.errstate(over="ignore"):
        return (_mix(a, b) ^ np.uint64(1 << 63)).view(np.int64)


def review_text(summary: Any, text: Any) -> str:
    """The line a prompt quotes for one review: ``summary: text`` (each clipped), or either one."""
    s, t = clip(summary, 120), clip(text, 400)
    return f"{s}: {t}" if s and t else (s or t)


_review_text = review_text  # the old private name (tests)


def item_fields(row: dict, has_year: bool, reviews: list[str]) -> dict:
    """Fields of one item prompt from its ETL ``items`` row (title, description, brand, categories;
    MovieLens ``year`` becomes the description when there is none) and its review lines."""
    cats = row.get("categories")
    cats = [clip(c, 80) for c in cats if c] if cats is not None and not isinstance(cats, float) else []
    desc = clip(row.get("description"))
    if has_year and clip(row.get("year")) and not desc:
        desc = f"Released in {clip(row.get('year'))}."
    return {
        "title": clip(row.get("title"), 200),
        "description": desc,
        "brand": clip(row.get("brand"), 100),
        "categories": cats,
        "reviews": list(reviews),
    }


def user_about(row: dict, side: list[str]) -> str:
    """The ``about`` line of a user prompt from the user's side columns (``USER_SIDE_COLUMNS``)."""
    return ", ".join(f"{c} {clip(row.get(c))}" for c in side if clip(row.get(c)))


def user_item(item_idx: int, title: Any, profile: Any, review: Any) -> dict:
    """One sampled train item of a user prompt: its title (unclipped, '' if missing), its item
    profile text (clipped to 400) and the user's own review line ('' if none)."""
    return {
        "item_idx": int(item_idx),
        "title": str(title) if isinstance(title, str) else "",
        "profile": clip(profile if isinstance(profile, str) else "", 400),
        "review": review if isinstance(review, str) else "",
    }


# ---- the pandas builders (small data; the reference of the Spark builder) -----------------------
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
    item columns such as ``year`` (MovieLens) are folded into description."""
    by_item: dict[int, list[str]] = {}
    reviews = train_reviews(reviews, interactions)
    if reviews is not None and len(reviews):
        r = reviews.copy()
        r["_o"] = _mix(r["item_idx"].to_numpy(), r["user_idx"].to_numpy())
        r = r.sort_values(["item_idx", "_o"])
        for item, grp in r.groupby("item_idx", sort=False):
            texts = [t for t in (review_text(s, x) for s, x in zip(grp.get("summary", [None] * len(grp)), grp["text"])) if t]
            if texts:
                by_item[int(item)] = texts[:max_reviews]
    has_year = "year" in set(items.columns)
    return [(int(d["item_idx"]), item_fields(d, has_year, by_item.get(int(d["item_idx"]), [])))
            for d in (row._asdict() for row in items.itertuples(index=False))]


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
            txt = review_text(s, t)
            if txt:
                rev[(int(u), int(i))] = txt
    per_user: dict[int, list[dict]] = {}
    for u, i in zip(sampled["user_idx"].to_numpy(), sampled["item_idx"].to_numpy()):
        u, i = int(u), int(i)
        per_user.setdefault(u, []).append(user_item(i, item_titles.get(i, ""), item_profiles.get(i, ""),
                                                    rev.get((u, i), "")))
    side = [c for c in USER_SIDE_COLUMNS if c in users.columns]
    return [(int(d["user_idx"]), {"about": user_about(d, side), "items": per_user.get(int(d["user_idx"]), [])})
            for d in (row._asdict() for row in users.itertuples(index=False))]
