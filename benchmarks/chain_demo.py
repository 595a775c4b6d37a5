"""The preprocessing chain on a real dataset: ETL -> profiles -> features -> graphs, then a re-run
that must skip every stage (issue 6's "must show").

    .venv/bin/python benchmarks/chain_demo.py --dataset scientific --engine template
    .venv/bin/python benchmarks/chain_demo.py --dataset ml-100k --engine template
    .venv/bin/python benchmarks/chain_demo.py --dataset ml-100k --engine transformers   # Gemma-3-270M, 32 items / 16 users
    .venv/bin/python benchmarks/chain_demo.py --dataset ml-100k --engine vllm           # profiles run in .venv-vllm

Everything goes through ``blast_ray.pipeline.run_pipeline`` with the dataset's config from
``configs/`` (its raw paths pointed at ../shared/data) and a temporary store (``--store`` to keep
one). For the LLM engines ``profiles.sample_items`` / ``sample_users`` bound the generation (the
other items are encoded from their raw text, counted in the features manifest; users without a
profile get a zero text vector). ``--engine vllm``: the vLLM CPU build lives in ``.venv-vllm``
(no Spark, no MiniLM wheel there), so this script runs ETL, features and graphs itself and the
profiles stage in a child ``.venv-vllm/bin/python benchmarks/chain_demo.py --child`` on the same
store; the stage fingerprints match across the two environments, so the child skips the ETL.

Prints a readable sample of profiles, every manifest in the store, the re-run's statuses, and ends
with one line ``RESULT {json}`` (machine, seeds, per-stage seconds, counts).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("etl", "profiles", "features", "graphs")
CONFIGS = {"ml-100k": "configs/ml-100k.yaml", "scientific": "configs/amazon-scientific.yaml"}


def build_config(args, store: str):
    from blast_ray.config import load_config, shared_data_dir

    data = shared_data_dir()
    sets = [f"store={store}", f"profiles.engine={args.engine}"]
    if args.dataset == "ml-100k":
        sets += [f"dataset.paths.{r}={data / 'movielens-100k' / ('ml-100k.' + r)}" for r in ("inter", "item", "user")]
    if args.engine != "template":
        sets += [f"profiles.model={args.model}", f"profiles.sample_items={args.items}", f"profiles.sample_users={args.users}",
                 f"profiles.max_new_tokens={args.max_new_tokens}", "profiles.max_retries=1",
                 "profiles.max_items_per_user=5", "profiles.batch_size=16", "profiles.num_cpus_per_actor=1.0"]
    return load_config(ROOT / CONFIGS[args.dataset], overrides=sets)


def run(cfg, stages, store):
    from blast_ray.pipeline import run_pipeline

    t0 = time.time()
    res = run_pipeline(cfg, stages=stages, store=store)
    if not res.ok:
        raise SystemExit(f"chain failed at {res.failed_stage}: {res.error}")
    return res, time.time() - t0


def print_profiles(store, cfg, n_items: int, n_users: int) -> list[dict]:
    from blast_ray.pipeline import STAGE_SPECS, StageContext, resolve_output
    from blast_ray.profiles import load_profiles

    ctx = StageContext(cfg, store, "show")
    for name in ("etl", "profiles"):
        ctx.outputs[name] = resolve_output(ctx, STAGE_SPECS[name])
    df = load_profiles(ctx.outputs["profiles"])
    items = store.read_table(*ctx.outputs["etl"].parts, "items").to_pandas().set_index("item_idx")
    shown = []
    for kind, n in (("item", n_items), ("user", n_users)):
        part = df[df["kind"] == kind].head(n)
        print(f"\n===== {kind} profiles: {len(df[df['kind'] == kind])} rows, engine {cfg.profiles.engine} =====")
        if cfg.profiles.engine != "template":
            sub = df[df["kind"] == kind]
            print(f"   LLM answers parsed: {int((~sub['fallback']).sum())}, fallbacks: {int(sub['fallback'].sum())}")
        for r in part.itertuples():
            tag = ("template text" if r.engine == "template" else "FALLBACK (deterministic text)" if r.fallback
                   else f"LLM answer parsed after {getattr(r, 'attempts', '?')} attempt(s)")
            head = f"[{kind} {r.idx}]"
            if kind == "item":
                head += f" {items.loc[r.idx, 'title']!s}"
            print(f"\n{head} -- {tag}")
            print(textwrap.fill(str(r.text), 110, initial_indent="  ", subsequent_indent="  "))
            raw = getattr(r, "raw", None)
            if r.engine != "template" and isinstance(raw, str) and raw.strip():
                print("  (LLM's last raw answer: " + " ".join(raw.split())[:300] + ")")
            shown.append({"kind": kind, "idx": int(r.idx), "title": str(items.loc[r.idx, "title"]) if kind == "item" else None,
                          "fallback": bool(r.fallback), "text": str(r.text)})
    return shown


def list_manifests(store_root: str) -> list[dict]:
    rows = []
    for p in sorted(Path(store_root).rglob("_MANIFEST.json")):
        m = json.loads(p.read_text())
        rows.append({"path": str(p.relative_to(store_root)), "stage": m.get("stage"), "fingerprint": m.get("fingerprint"),
                     "files": len(m.get("files", [])), "total_s": m.get("timings", {}).get("total_s")})
    print("\n===== manifests in the store =====")
    for r in rows:
        print(f"  {r['path']}  ({r['files']} files, {r['total_s']} s)")
    return rows


def child(args) -> None:
    """Inside .venv-vllm: run the profiles stage (the ETL is found committed and skipped)."""
    from blast_ray.store import ArtifactStore

    cfg = build_config(args, args.store)
    store = ArtifactStore(cfg.store)
    res, secs = run(cfg, ("etl", "profiles"), store)
    if res.status["etl"] != "skipped":
        raise SystemExit(f"child expected the ETL committed by the parent; status {res.status}")
    print(f"child: profiles {res.status['profiles']} in {secs:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k", choices=sorted(CONFIGS))
    ap.add_argument("--engine", default="template", choices=["template", "transformers", "vllm"])
    ap.add_argument("--items", type=int, default=32, help="LLM engines: items profiled (profiles.sample_items)")
    ap.add_argument("--users", type=int, default=16, help="LLM engines: users profiled (profiles.sample_users)")
    ap.add_argument("--model", default="gemma3-270m-gguf")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--show", type=int, default=4, help="profiles of each kind printed")
    ap.add_argument("--store", default="", help="keep the store here (default: a temporary folder)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.child:
        return child(args)

    from blast_ray.runtime import ensure_ray
    from blast_ray.store import ArtifactStore

    tmp = None
    if not args.store:
        tmp = tempfile.TemporaryDirectory(prefix="chain-demo-")
        args.store = tmp.name
    cfg = build_config(args, args.store)
    store = ArtifactStore(cfg.store)
    t_all = time.time()
    status1: dict[str, str] = {}
    if args.engine == "vllm":
        vpy = ROOT / ".venv-vllm" / "bin" / "python"
        if not vpy.exists():
            raise SystemExit("--engine vllm needs .venv-vllm (make vllm-env)")
        ensure_ray()
        res, _ = run(cfg, ("etl",), store)
        status1.update(etl=res.status["etl"])
        import ray

        ray.shutdown()  # the child starts its own local Ray; two on 2 CPUs would starve the engine
        cmd = [str(vpy), __file__, "--child", "--dataset", args.dataset, "--engine", "vllm", "--store", args.store,
               "--items", str(args.items), "--users", str(args.users), "--model", args.model,
               "--max-new-tokens", str(args.max_new_tokens)]
        t = time.time()
        subprocess.run(cmd, check=True, cwd=ROOT)
        print(f"vllm child: {time.time() - t:.1f} s")
        status1["profiles"] = "ran (child .venv-vllm)"
        ensure_ray()
        res, _ = run(cfg, STAGES, store)
        status1.update({s: res.status[s] for s in ("features", "graphs")})
        assert res.status["profiles"] == "skipped", res.status
    else:
        ensure_ray()
        res, _ = run(cfg, STAGES, store)
        status1.update({s: res.status[s] for s in STAGES})
    first_s = time.time() - t_all
    print("\nfirst run:", status1)

    shown = print_profiles(store, cfg, args.show, args.show)
    manifests = list_manifests(args.store)
    assert {m["stage"] for m in manifests} >= set(STAGES), manifests

    res2, rerun_s = run(cfg, STAGES, store)
    again = {s: res2.status[s] for s in STAGES}
    print("\nre-run:", again, f"({rerun_s:.1f} s)")
    if set(again.values()) != {"skipped"}:
        raise SystemExit(f"re-run did not skip every stage: {again}")

    m = res2.manifests
    rc = {s: m[s].get("row_counts", {}) for s in STAGES}
    result = {
        "benchmark": "chain_demo", "dataset": args.dataset, "engine": args.engine,
        "model": m["profiles"]["extra"].get("model"),
        "users": rc["etl"]["users"], "items": rc["etl"]["items"], "interactions": rc["etl"]["interactions"],
        "item_profiles": rc["profiles"].get("item_profiles"), "user_profiles": rc["profiles"].get("user_profiles"),
        "generated_item_profiles": m["profiles"]["extra"].get("generated", {}).get("item"),
        "generated_user_profiles": m["profiles"]["extra"].get("generated", {}).get("user"),
        "fallback_rate": m["profiles"]["extra"].get("fallback_rate"),
        "modalities": m["features"]["extra"]["modalities"], "item_text_raw_fallback": rc["features"].get("item_text_raw_fallback"),
        "user_text_missing": rc["features"].get("user_text_missing"),
        "item_graph_nnz": rc["graphs"].get("item_graph"), "user_graph_nnz": rc["graphs"].get("user_graph"),
        "user_graph": m["graphs"]["extra"].get("user_graph"),
        **{f"{s}_s": m[s].get("timings", {}).get("total_s") for s in STAGES},
        "first_run_s": round(first_s, 1), "rerun_s": round(rerun_s, 2), "rerun_all_skipped": True,
        "manifests": len(manifests),
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, no GPU", "seed": f"etl.seed={cfg.etl.seed}; greedy decoding",
    }
    if tmp is not None:
        import ray

        ray.shutdown()
        tmp.cleanup()
    print("RESULT " + json.dumps(result))
    return shown


if __name__ == "__main__":
    main()
