"""``blast runs list|show|compare|promote``: the run registry for people."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from blast_ray.runs.record import effective_status
from blast_ray.runs.registry import flat_metrics, get_latest, list_runs, load_run, promote
from blast_ray.store import ArtifactStore, layout
from blast_ray.store.names import validate_name


def _store_and_dataset(args: argparse.Namespace) -> tuple[ArtifactStore, str]:
    store, dataset = args.store, args.dataset
    if args.config:
        from blast_ray.entry import load_config_from_args

        cfg = load_config_from_args(args)  # the same --config/--set/--store rules as every entry point
        store = store or cfg.store
        dataset = dataset or cfg.dataset.name
    if not store or not dataset:
        raise ValueError("blast runs needs --config, or both --store and --dataset")
    return ArtifactStore(store), validate_name(dataset, "--dataset")


def format_run_summary(run: dict[str, Any], run_uri: str) -> str:
    """A run for people: metrics first (one row per metric, one column per split), then status,
    stages with their time and fingerprint, where the record is. ``--json`` gives the full record."""
    from blast_ray.report.console import format_metrics_table

    lines = [f"run {run.get('run_id')}  {run.get('status', '?')}{'  (latest)' if run.get('is_latest') else ''}"
             f"  dataset {run.get('dataset')}  {run.get('started_at', '')} -> {run.get('finished_at', '-')}"]
    metrics = flat_metrics(run)
    lines += ["", format_metrics_table(metrics) if metrics else "(no metrics: the run did not train or evaluate)"]
    if run.get("error"):
        lines += ["", f"failed at stage {run.get('failed_stage')}: {run['error']}"]
    lines += ["", f"{'stage':<10} {'status':<16} {'seconds':>8}  fingerprint"]
    from blast_ray.config import STAGES

    stages = run.get("stages") or {}
    for name, st in sorted(stages.items(), key=lambda kv: STAGES.index(kv[0]) if kv[0] in STAGES else len(STAGES)):
        secs = (st.get("timings") or {}).get("total_s")
        secs_s = f"{secs:8.1f}" if isinstance(secs, (int, float)) else f"{'-':>8}"
        lines.append(f"{name:<10} {st.get('status', '?'):<16} {secs_s}  {st.get('fingerprint') or '-'}")
    lines += ["", f"code {run.get('code_version')}; run folder: {run_uri} (--json prints the record)"]
    return "\n".join(lines)


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
            print(f"{r['run_id']:<24} {effective_status(r):<10} {r.get('started_at', ''):<21} {ms}  {'*' if r['run_id'] == latest else ''}", file=out)
        if not runs:
            print(f"(no runs under {store.uri(*layout.runs_root(dataset))})", file=out)
        return 0
    if not args.run_ids:
        raise ValueError(f"blast runs {args.action} needs a run id (see `blast runs list`)")
    if args.action == "show":
        for rid in args.run_ids:
            run = load_run(store, dataset, rid)
            run["is_latest"] = rid == latest
            run["status"] = effective_status(run)  # a dead process's "running" reads "abandoned"
            if getattr(args, "json", False):
                print(json.dumps(run, indent=2, sort_keys=True, default=str), file=out)
            else:
                print(format_run_summary(run, store.uri(*layout.run_parts(dataset, rid))), file=out)
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
