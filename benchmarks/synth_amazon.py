"""Synthetic Amazon-2018-format dumps for scale measurements (never for quality claims).

    .venv/bin/python benchmarks/synth_amazon.py --reviews 1M --out /tmp/synth-1m
    .venv/bin/python benchmarks/synth_amazon.py --reviews 10M --out /tmp/synth-10m --seed 7

Writes ``<out>/<Category>.json.gz`` (review JSON lines, the published 2018 schema: overall,
verified, reviewTime, reviewerID, asin, reviewerName, reviewText, summary, unixReviewTime, and
sometimes style) and ``<out>/meta_<Category>.json.gz`` (one JSON line per item: category path,
title, brand, description, also_buy, price), plus ``<out>/synth.json`` with the parameters and
the fitted figures. The output is a function of (--reviews, --seed) alone.

How the numbers are drawn, from the real data in ``../shared/data`` (``--data-dir``):
- user activity and item popularity: discrete power laws ``P(d) ~ d^-alpha`` for d >= 5 whose
  exponents are the maximum-likelihood fits (Clauset et al. 2009, continuity-corrected) to the
  user and item degree distributions of the real Baby and Sports 5-core datasets (mean of the two);
  degrees are capped at the largest degree seen in the real data, scaled by sqrt(size ratio).
  Each user's reviews go to items drawn in proportion to the items' sampled popularity.
- review and summary lengths (words) from the real review samples in ``amazon-raw-2018/``
  (All_Beauty_5, AMAZON_FASHION_5); title lengths from the real meta sample; words from the
  real reviews' vocabulary by frequency; ratings from the real rating distribution.
- categories: a three-level tree (20 x 12 leaves) under the category name; brands: 5,000 names
  with Zipf-distributed use; 20% of items have no description.
- noise: ``--dup-share`` (default 0.5%) of review lines are written twice, ``--bad-share``
  (default 0.1%) are truncated mid-object (malformed JSON), as real dumps have both.

Ends with one line ``RESULT {json}`` (machine, seed, counts, seconds, bytes).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
KMIN = 5  # the real datasets are 5-cores: the power law is fitted and drawn from d >= 5
TEXT_POOL = 20_000  # distinct review texts per dump (lengths follow the real distribution)


def parse_size(s: str) -> int:
    """'1M' -> 1_000_000, '300k' -> 300_000, '2500' -> 2500."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", s.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"--reviews {s!r}: expected a count like 1M, 300k or 25000")
    mult = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def powerlaw_alpha(degrees: np.ndarray, kmin: int = KMIN) -> float:
    """Discrete power-law exponent by maximum likelihood (continuity-corrected approximation):
    ``alpha = 1 + n / sum(ln(d / (kmin - 0.5)))`` over the degrees d >= kmin."""
    d = np.asarray(degrees, dtype=np.float64)
    d = d[d >= kmin]
    return float(1.0 + len(d) / np.log(d / (kmin - 0.5)).sum())


def real_degrees(data_dir: Path) -> dict[str, np.ndarray]:
    """User and item degrees of the real Baby (LATTICE split, all three parts) and Sports 5-cores."""
    out: dict[str, np.ndarray] = {}
    baby = data_dir / "amazon-baby-5core"
    users: dict[str, int] = {}
    items: dict[int, int] = {}
    for part in ("train", "val", "test"):
        for u, its in json.loads((baby / f"{part}.json").read_text()).items():
            users[u] = users.get(u, 0) + len(its)
            for i in its:
                items[i] = items.get(i, 0) + 1
    out["baby.users"] = np.fromiter(users.values(), dtype=np.int64)
    out["baby.items"] = np.fromiter(items.values(), dtype=np.int64)
    su: list[int] = []
    si: dict[str, int] = {}
    with open(data_dir / "amazon-sports-5core" / "Sports_and_Outdoors.txt") as f:
        for line in f:
            parts = line.split()
            su.append(len(parts) - 1)
            for i in parts[1:]:
                si[i] = si.get(i, 0) + 1
    out["sports.users"] = np.asarray(su, dtype=np.int64)
    out["sports.items"] = np.fromiter(si.values(), dtype=np.int64)
    return out


def real_text_stats(data_dir: Path) -> dict:
    """Word-count samples of reviews, summaries and titles, the vocabulary and ratings."""
    raw = data_dir / "amazon-raw-2018"
    review_len, summary_len, ratings = [], [], []
    vocab: dict[str, int] = {}
    for name in ("All_Beauty_5.json.gz", "AMAZON_FASHION_5.json.gz"):
        with gzip.open(raw / name, "rt") as f:
            for line in f:
                r = json.loads(line)
                words = str(r.get("reviewText", "")).split()
                review_len.append(len(words))
                summary_len.append(len(str(r.get("summary", "")).split()))
                ratings.append(float(r.get("overall", 5.0)))
                for w in words:
                    w = w.strip(".,!?;:()\"'").lower()
                    if w.isalpha():
                        vocab[w] = vocab.get(w, 0) + 1
    title_len = []
    with gzip.open(raw / "meta_Magazine_Subscriptions.json.gz", "rt") as f:
        for line in f:
            t = json.loads(line).get("title", "")
            if t and "<" not in t:  # some titles are raw HTML fragments: not a title length
                title_len.append(len(t.split()))
    words = sorted(vocab, key=lambda w: (-vocab[w], w))
    freq = np.asarray([vocab[w] for w in words], dtype=np.float64)
    return {
        "review_len": np.asarray(review_len), "summary_len": np.asarray(summary_len),
        "title_len": np.asarray(title_len), "ratings": np.asarray(ratings),
        "words": np.asarray(words), "word_p": freq / freq.sum(),
    }


def draw_powerlaw(rng: np.random.Generator, alpha: float, n: int, dmax: int) -> np.ndarray:
    """n integer degrees >= KMIN from the continuous power law rounded down, capped at dmax."""
    u = rng.random(n)
    d = (KMIN - 0.5) * (1.0 - u) ** (-1.0 / (alpha - 1.0)) + 0.5
    return np.minimum(d.astype(np.int64), dmax)


def sentences(rng: np.random.Generator, words: np.ndarray, p: np.ndarray, lengths: np.ndarray,
              period: bool = True) -> list[str]:
    """One text per length, words drawn by real frequency (first letter capitalised, a final
    period when ``period``: names, brands and category labels have none)."""
    flat = rng.choice(len(words), size=int(lengths.sum()), p=p)
    out, pos = [], 0
    for n in lengths:
        w = words[flat[pos: pos + n]]
        pos += n
        s = " ".join(w)
        out.append((s[:1].upper() + s[1:] + ("." if period else "")) if s else "")
    return out


def ident(prefix: str, i: np.ndarray, width: int) -> np.ndarray:
    """Amazon-looking ids: prefix + base-36 of a scrambled index (a bijection mod 36**width)."""
    digits = np.asarray(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    w = min(width, 10)  # 36**10 * 2.65e9 stays far below int64 for any index < 1e8
    x = ((i.astype(np.int64) + 1) * 2_654_435_761) % (36 ** w)  # multiplier coprime with 36: bijective
    out = np.full(len(i), prefix + "0" * (width - w), dtype=f"<U{len(prefix) + width}")
    for p in range(w - 1, -1, -1):
        out = np.char.add(out, digits[(x // 36 ** p) % 36])
    return out


def generate(out: Path, n_reviews: int, seed: int, data_dir: Path, category: str,
             dup_share: float, bad_share: float, chunk: int = 200_000) -> dict:
    rng = np.random.default_rng(seed)
    t0 = time.time()
    deg = real_degrees(data_dir)
    alpha_u = float(np.mean([powerlaw_alpha(deg["baby.users"]), powerlaw_alpha(deg["sports.users"])]))
    alpha_i = float(np.mean([powerlaw_alpha(deg["baby.items"]), powerlaw_alpha(deg["sports.items"])]))
    real_n = len(deg["baby.users"]) + len(deg["sports.users"])
    real_inter = int(deg["baby.users"].sum() + deg["sports.users"].sum())
    scale = max(1.0, np.sqrt(n_reviews / (real_inter / 2)))
    umax = int(max(deg["baby.users"].max(), deg["sports.users"].max()) * scale)
    imax = int(max(deg["baby.items"].max(), deg["sports.items"].max()) * scale)
    text = real_text_stats(data_dir)

    # users: draw activities until they cover n_reviews, then cut the last one
    mean_u = float(np.mean(np.concatenate([deg["baby.users"], deg["sports.users"]])))
    acts = draw_powerlaw(rng, alpha_u, int(n_reviews / mean_u * 1.2) + 10, umax)
    while acts.sum() < n_reviews:
        acts = np.concatenate([acts, draw_powerlaw(rng, alpha_u, len(acts) // 2 + 10, umax)])
    csum = np.cumsum(acts)
    n_users = int(np.searchsorted(csum, n_reviews) + 1)
    acts = acts[:n_users].copy()
    acts[-1] -= int(csum[n_users - 1] - n_reviews)
    # items: popularity weights from the item power law, count from the mean item degree
    mean_i = float(np.mean(np.concatenate([deg["baby.items"], deg["sports.items"]])))
    n_items = max(KMIN, int(round(n_reviews / mean_i)))
    pop = draw_powerlaw(rng, alpha_i, n_items, imax).astype(np.float64)
    item_cdf = np.cumsum(pop / pop.sum())

    user_ids = ident("A", np.arange(n_users), 13)
    item_ids = ident("B0", np.arange(n_items), 8)
    review_pool = sentences(rng, text["words"], text["word_p"], rng.choice(text["review_len"], TEXT_POOL))
    summary_pool = sentences(rng, text["words"], text["word_p"], rng.choice(text["summary_len"], TEXT_POOL))
    names = sentences(rng, text["words"], text["word_p"], np.full(2_000, 1), period=False)
    months = ["%02d" % m for m in range(1, 13)]

    out.mkdir(parents=True, exist_ok=True)
    rev_path, meta_path = out / f"{category}.json.gz", out / f"meta_{category}.json.gz"
    user_of = np.repeat(np.arange(n_users), acts)
    lines = dups = bad = 0
    with gzip.open(rev_path, "wt", compresslevel=1) as f:
        for s in range(0, n_reviews, chunk):
            u = user_of[s: s + chunk]
            m = len(u)
            it = np.minimum(np.searchsorted(item_cdf, rng.random(m)), n_items - 1)
            rating = rng.choice(text["ratings"], m)
            ts = rng.integers(946_684_800, 1_538_352_000, m)  # 2000-01-01 .. 2018-10-01
            rv = rng.integers(0, TEXT_POOL, m)
            sm = rng.integers(0, TEXT_POOL, m)
            nm = rng.integers(0, len(names), m)
            verified = rng.random(m) < 0.9
            styled = rng.random(m) < 0.3
            dup = rng.random(m) < dup_share
            broken = rng.random(m) < bad_share
            buf = []
            for k in range(m):
                t = int(ts[k])
                tm = time.gmtime(t)
                r = {"overall": float(rating[k]), "verified": bool(verified[k]),
                     "reviewTime": f"{months[tm.tm_mon - 1]} {tm.tm_mday}, {tm.tm_year}",
                     "reviewerID": user_ids[u[k]], "asin": item_ids[it[k]], "reviewerName": names[nm[k]],
                     "reviewText": review_pool[rv[k]], "summary": summary_pool[sm[k]], "unixReviewTime": t}
                if styled[k]:
                    r["style"] = {"Size:": " M", "Color:": " Black"}
                line = json.dumps(r)
                if broken[k]:
                    buf.append(line[: len(line) // 2])
                    bad += 1
                else:
                    buf.append(line)
                    if dup[k]:
                        buf.append(line)
                        dups += 1
            lines += len(buf)
            f.write("\n".join(buf) + "\n")
    t_reviews = time.time() - t0

    top = [f"{category.replace('_', ' ')} {w}" for w in sentences(rng, text["words"], text["word_p"], np.full(20, 1), period=False)]
    leaf = sentences(rng, text["words"], text["word_p"], np.full(12, 2), period=False)
    brand_w = 1.0 / np.arange(1, 5_001)
    brands = sentences(rng, text["words"], text["word_p"], np.full(5_000, 1), period=False)
    title_pool = sentences(rng, text["words"], text["word_p"], rng.choice(text["title_len"], TEXT_POOL), period=False)
    with gzip.open(meta_path, "wt", compresslevel=1) as f:
        for s in range(0, n_items, chunk):
            idx = np.arange(s, min(n_items, s + chunk))
            m = len(idx)
            c1 = rng.integers(0, 20, m)
            c2 = rng.integers(0, 12, m)
            br = rng.choice(5_000, m, p=brand_w / brand_w.sum())
            ti = rng.integers(0, TEXT_POOL, m)
            de = rng.integers(0, TEXT_POOL, m)
            has_desc = rng.random(m) >= 0.2
            also = rng.integers(0, n_items, (m, 3))
            price = rng.gamma(2.0, 15.0, m)
            buf = []
            for k in range(m):
                d = {"category": [category.replace("_", " "), top[c1[k]], leaf[c2[k]]],
                     "title": title_pool[ti[k]], "brand": brands[br[k]],
                     "description": [review_pool[de[k]]] if has_desc[k] else [],
                     "also_buy": [item_ids[j] for j in also[k]], "price": f"${price[k]:.2f}",
                     "asin": item_ids[idx[k]]}
                buf.append(json.dumps(d))
            f.write("\n".join(buf) + "\n")
    info = {
        "reviews": n_reviews, "seed": seed, "category": category,
        "users": n_users, "items": n_items, "review_lines": lines, "duplicate_lines": dups,
        "malformed_lines": bad, "alpha_users": round(alpha_u, 4), "alpha_items": round(alpha_i, 4),
        "max_user_degree": umax, "max_item_degree": imax,
        "seconds": round(time.time() - t0, 2), "seconds_reviews": round(t_reviews, 2),
        "review_bytes": rev_path.stat().st_size, "meta_bytes": meta_path.stat().st_size,
        "files": {"reviews": rev_path.name, "meta": meta_path.name}, "real_users_fitted": real_n,
    }
    (out / "synth.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reviews", type=parse_size, default=parse_size("1M"), help="review lines (1M, 3M, 10M, ...)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--category", default="Clothing_Shoes_and_Jewelry")
    ap.add_argument("--dup-share", type=float, default=0.005)
    ap.add_argument("--bad-share", type=float, default=0.001)
    ap.add_argument("--data-dir", default=os.environ.get("BLAST_DATA_DIR", str(DEFAULT_DATA)))
    args = ap.parse_args(argv)
    if args.reviews < 100:
        ap.error("--reviews must be >= 100")
    info = generate(Path(args.out), args.reviews, args.seed, Path(args.data_dir), args.category,
                    args.dup_share, args.bad_share)
    flat = {k: v for k, v in info.items() if not isinstance(v, dict)}
    flat["machine"] = f"{platform.node()} {os.cpu_count()} cpus"
    print("RESULT " + json.dumps(flat))
    return info


if __name__ == "__main__":
    main()
