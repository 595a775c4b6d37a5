"""Print LLM profiles for a person to read: a sample of real items and users, one engine per run.

    .venv/bin/python benchmarks/profiles_sample.py --engine template --dataset ml-100k
    .venv/bin/python benchmarks/profiles_sample.py --engine transformers --dataset ml-100k    # Gemma-3-270M
    .venv-vllm/bin/python benchmarks/profiles_sample.py --engine vllm --dataset ml-100k      # Gemma via vLLM CPU
    .venv/bin/python benchmarks/profiles_sample.py --engine template --dataset scientific --items 0 --users 0

``--items/--users`` (default 32 and 16; 0 = all) bound the sample. The inputs are built as
ETL-shaped tables from the real shared files (tests/test_profiles.py). Ends with one line
``RESULT {json}``: engine, model, dataset, rows, fallback rate, seconds, machine, seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="template", choices=["template", "transformers", "vllm", "http"])
    ap.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "scientific"])
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--model", default="gemma3-270m-gguf")
    ap.add_argument("--endpoint", default="")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--show", type=int, default=8, help="profiles of each kind printed in full")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from test_profiles import make_cfg, movielens_tables, run_stage, scientific_tables, write_etl

    from blast_ray.config import shared_data_dir
    from blast_ray.runtime import ensure_ray
    from blast_ray.store import ArtifactStore

    ensure_ray(num_cpus=os.cpu_count())
    data = shared_data_dir()
    tables, category = ((movielens_tables(data), "movies") if args.dataset == "ml-100k"
                        else (scientific_tables(data), "industrial and scientific products"))
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(tmp)
        etl = write_etl(store, args.dataset, tables)
        kw = dict(engine=args.engine, batch_size=16, max_new_tokens=args.max_new_tokens, max_retries=1,
                  max_items_per_user=5, num_cpus_per_actor=1.0)
        if args.engine != "template":
            kw["model"] = args.model
        if args.engine == "http":
            kw["endpoint"] = args.endpoint
        if args.items:
            kw["sample_items"] = args.items
        if args.users:
            kw["sample_users"] = args.users
        cfg = make_cfg(store.root, args.dataset, category, **kw)
        t0 = time.time()
        out, m = run_stage(cfg, store, etl)
        secs = time.time() - t0
        df = store.read_table(*out.parts, "profiles").to_pandas()
    for kind in ("item", "user"):
        part = df[df["kind"] == kind].sort_values("idx").head(args.show)
        print(f"\n===== {kind} profiles ({args.engine}, {m['extra']['model']}) =====")
        for r in part.itertuples():
            tag = ("template text" if r.engine == "template" else
                   "FALLBACK" if r.fallback else f"parsed after {r.attempts} attempt(s)")
            print(f"\n[{kind} {r.idx}] {tag}")
            print(textwrap.fill(r.text, 110, initial_indent="  ", subsequent_indent="  "))
            if r.fallback and r.raw:
                print("  (last raw answer: " + " ".join(r.raw.split())[:200] + ")")
    result = {
        "benchmark": "profiles_sample", "engine": args.engine, "model": m["extra"]["model"], "dataset": args.dataset,
        "items": int((df["kind"] == "item").sum()), "users": int((df["kind"] == "user").sum()),
        "fallback_rate": m["extra"]["fallback_rate"], "seconds": round(secs, 1),
        "items_s": m["timings"]["items_s"], "users_s": m["timings"]["users_s"],
        "max_new_tokens": args.max_new_tokens, "machine": f"{platform.node()} {os.cpu_count()} CPUs, no GPU",
        "seed": "fixed sample order (hash of ids); greedy decoding",
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
