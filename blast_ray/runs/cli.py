"""``blast runs list|show|compare|promote``: the run registry for people."""

from __future__ import annotations

import argparse
import json
import sys

from blast_ray.runs.registry import flat_metrics, get_latest, list_runs, load_run, promote
from blast_ray.store import ArtifactStore
from blast_ray.store.names import validate_name


def _store_and_dataset(args: argparse.Namespace) -> tuple[ArtifactStore, str]:
    store, dataset = args.store, args.dataset
    if args.config:
        from blast_ray.config import load_config

        cfg = load_config(args.config)
        store = store or cfg.store
        dataset = dataset or cfg.dataset.name
    if not store or not dataset:
        raise ValueError("blast runs needs --config, or both --store and --dataset")
    return ArtifactStore(store), validate_name(dataset, "--dataset")


def runs_command(args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    for rid in getattr(args, "run_ids", None) or []:
        validate_name(rid, "run id")  # before any store access: a run id becomes a path part
    store, dataset = _store_and_dataset(args)
    latest = (get_latest(store, dataset) or {}).get("run_id")
    if args.action == "list":
        runs = list_runs(store, dataset)
        print(f"{'run_id':<24} {'status':<10} {'started_at':<21} {'valid.recall@20':>16}  latest", file=out)
        for r in runs:
            m = flat_metrics(r).get("valid.recall@20")
            ms = f"{m:16.4f}" if isinstance(m, (int, float)) else f"{'-':>16}"
            print(f"{r['run_id']:<24} {r.get('status', '?'):<10} {r.get('started_at', ''):<21} {ms}  {'*' if r['run_id'] == latest else ''}", file=out)
        if not runs:
            print(f"(no runs under {store.uri(dataset, 'runs')})", file=out)
        return 0
    if not args.run_ids:
        raise ValueError(f"blast runs {args.action} needs a run id (see `blast runs list`)")
    if args.action == "show":
        for rid in args.run_ids:
            run = load_run(store, dataset, rid)
            run["is_latest"] = rid == latest
            print(json.dumps(run, indent=2, sort_keys=True, default=str), file=out)
        return 0
    if args.action == "compare":
        runs = [load_run(store, dataset, rid) for rid in args.run_ids]
        metrics = [flat_metrics(r) for r in runs]
        keys = sorted({k for m in metrics for k in m if isinstance(m[k], (int, float))})
        print(f"{'metric':<20}" + "".join(f"{r['run_id']:>26}" for r in runs), file=out)
        for k in keys:
            vals = "".join(f"{m[k]:>26.4f}" if isinstance(m.get(k), (int, float)) else f"{'-':>26}" for m in metrics)
            print(f"{k:<20}{vals}", file=out)
        for r in runs:
            diff = {s: v.get("fingerprint") for s, v in r.get("stages", {}).items()}
            print(f"{r['run_id']}: code {r.get('code_version')}, stages {diff}", file=out)
        return 0
    if args.action == "promote":
        if len(args.run_ids) != 1:
            raise ValueError("blast runs promote takes exactly one run id")
        pointer = promote(store, dataset, args.run_ids[0], reason="manual (blast runs promote)")
        print(f"latest -> {pointer['run_id']} (was {pointer['previous']})", file=out)
        return 0
    raise ValueError(f"unknown runs action {args.action!r}")
