"""Pipeline scaling: etl -> profiles -> features -> graphs -> augment on synthetic Amazon dumps.

    .venv/bin/python benchmarks/pipeline_scaling.py --sizes 1M,3M,10M --work /tmp/pipeline-scaling
    .venv/bin/python benchmarks/pipeline_scaling.py --sizes 50k,150k          # a quick look

For each size, ``benchmarks/synth_amazon.py`` writes a dump (seeded, reused when present), then
each stage runs alone, in a fresh Python process, through ``run_pipeline`` (upstream from the
store), while a sampler thread reads the resident memory (psutil, every 0.2 s) of this process (the driver) and of each of its
descendants (Ray workers, raylet, Spark's JVM: the largest single one is "worker"). Profiles use
the template engine; features the offline MiniLM encoder over every profile (no sampling: the
graphs stage needs every vector). On 2 cores MiniLM encodes a few hundred template profiles a
second, so the 10M size (about 1.5M profiles) takes over an hour in features alone.

Synthetic data measures scale only: no quality figure is ever taken from it.

Ends with ``RESULT {json}``: ``<stage>.seconds@<size>``, ``<stage>.driver_peak_gib@<size>``,
``<stage>.worker_peak_gib@<size>``, ``<stage>.rows@<size>``, and the summaries
``driver_peak_ratio_max`` (over stages: driver peak at the largest size / at the smallest),
``worker_peak_gib_max``, ``time_exponent_max`` (stages other than graphs:
log(t_largest / t_smallest) / log(size ratio)) and ``graphs.time_exponent``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("etl", "profiles", "features", "graphs", "augment")


def _synth_module():
    spec = importlib.util.spec_from_file_location("synth_amazon", ROOT / "benchmarks" / "synth_amazon.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class PeakSampler:
    """Peak RSS of this process and of its largest single descendant, sampled in a thread."""

    def __init__(self, period_s: float = 0.2):
        self.period_s = period_s
        self.driver = self.worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                self.driver = max(self.driver, me.memory_info().rss)
                for child in me.children(recursive=True):
                    try:
                        self.worker = max(self.worker, child.memory_info().rss)
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.Error:
                pass
            self._stop.wait(self.period_s)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def stage_rows(manifest: dict, stage: str) -> int:
    rc = manifest.get("row_counts", {}) or {}
    key = {"etl": "interactions", "profiles": "profiles", "features": "item_text", "graphs": "item_graph",
           "augment": "augmented_pairs"}[stage]
    if key in rc:
        return int(rc[key])
    return int(sum(v for v in rc.values() if isinstance(v, (int, float))))


def size_config(size: int, work: Path, args):
    """The pipeline config of one size (the synthetic dump must exist)."""
    from blast_ray.config import config_from_dict

    dump = work / f"dump-{size}"
    info = json.loads((dump / "synth.json").read_text())
    return config_from_dict({
        "dataset": {"name": f"synth{size}", "format": "amazon2018", "category": "clothing",
                    "paths": {"reviews": str(dump / info["files"]["reviews"]), "meta": str(dump / info["files"]["meta"])}},
        "store": str(work / "store"),
        "etl": {"kcore": 5, "shuffle_partitions": args.shuffle_partitions, "driver_memory": args.spark_memory},
        "profiles": {"engine": "template"},
        "augment": {"num_blocks": args.augment_blocks},
    }, ROOT)


def run_stage(size: int, stage: str, work: Path, args) -> dict[str, float]:
    """One stage of one size in THIS process (a fresh one per stage: peaks are the stage's own)."""
    from blast_ray.pipeline import run_pipeline

    cfg = size_config(size, work, args)
    t = time.time()
    with PeakSampler() as peak:
        res = run_pipeline(cfg, stages=(stage,), use_committed_upstream=True)
    secs = time.time() - t
    if not res.ok:
        raise SystemExit(f"[{size:,}] {res.error}")
    return {f"{stage}.seconds@{size}": round(secs, 2),
            f"{stage}.driver_peak_gib@{size}": round(peak.driver / 2**30, 3),
            f"{stage}.worker_peak_gib@{size}": round(peak.worker / 2**30, 3),
            f"{stage}.rows@{size}": stage_rows(res.manifests[stage], stage)}


def run_size(size: int, work: Path, seed: int, args) -> dict[str, float]:
    dump = work / f"dump-{size}"
    if not (dump / "synth.json").exists():
        synth = _synth_module()
        t = time.time()
        synth.generate(dump, size, seed, Path(os.environ.get("BLAST_DATA_DIR", synth.DEFAULT_DATA)),
                       "Clothing_Shoes_and_Jewelry", 0.005, 0.001)
        print(f"[{size:,}] synthetic dump written in {time.time() - t:.0f} s", flush=True)
    out: dict[str, float] = {}
    for stage in STAGES:
        cmd = [sys.executable, __file__, "--one-stage", stage, "--sizes", str(size), "--work", str(work),
               "--shuffle-partitions", str(args.shuffle_partitions), "--spark-memory", args.spark_memory,
               "--augment-blocks", str(args.augment_blocks)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("STAGE ")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise SystemExit(f"[{size:,}] {stage} failed (exit {proc.returncode}): {' | '.join(tail)}")
        got = json.loads(lines[-1][len("STAGE "):])
        out.update(got)
        print(f"[{size:,}] {stage:9s} {got[f'{stage}.seconds@{size}']:8.1f} s  "
              f"driver {got[f'{stage}.driver_peak_gib@{size}']:6.2f} GiB  "
              f"largest worker {got[f'{stage}.worker_peak_gib@{size}']:6.2f} GiB  rows {got[f'{stage}.rows@{size}']:,}",
              flush=True)
    return out


def summarize(result: dict, sizes: list[int]) -> dict:
    lo, hi = sizes[0], sizes[-1]
    ratios, exps = [], []
    summary: dict[str, float] = {}
    for stage in STAGES:
        d_lo, d_hi = result.get(f"{stage}.driver_peak_gib@{lo}"), result.get(f"{stage}.driver_peak_gib@{hi}")
        if d_lo and d_hi:
            ratios.append(d_hi / d_lo)
        t_lo, t_hi = result.get(f"{stage}.seconds@{lo}"), result.get(f"{stage}.seconds@{hi}")
        if t_lo and t_hi and hi > lo:
            e = math.log(t_hi / t_lo) / math.log(hi / lo)
            if stage == "graphs":
                summary["graphs.time_exponent"] = round(e, 3)
            else:
                exps.append(e)
    if ratios:
        summary["driver_peak_ratio_max"] = round(max(ratios), 3)
    if exps:
        summary["time_exponent_max"] = round(max(exps), 3)
    workers = [v for k, v in result.items() if ".worker_peak_gib@" in k]
    if workers:
        summary["worker_peak_gib_max"] = round(max(workers), 3)
    return summary


def main(argv: list[str] | None = None) -> dict:
    synth = _synth_module()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1M,3M,10M", help="review counts, comma-separated (1M, 300k, ...)")
    ap.add_argument("--work", default="/tmp/blast-pipeline-scaling", help="dumps and store (reused)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--shuffle-partitions", type=int, default=16)
    ap.add_argument("--spark-memory", default="6g")
    ap.add_argument("--augment-blocks", type=int, default=1)
    ap.add_argument("--one-stage", choices=STAGES, help=argparse.SUPPRESS)  # internal: one stage, one size
    args = ap.parse_args(argv)
    sizes = sorted(synth.parse_size(s) for s in args.sizes.split(","))
    work = Path(args.work)
    if args.one_stage:
        got = run_stage(sizes[0], args.one_stage, work, args)
        print("STAGE " + json.dumps(got), flush=True)
        return got
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": f"{platform.node()} {os.cpu_count()} cpus "
                               f"{psutil.virtual_memory().total / 2**30:.0f} GiB", "seed": args.seed,
                    "sizes": ",".join(str(s) for s in sizes)}
    for size in sizes:
        result.update(run_size(size, work, args.seed, args))
    result.update(summarize(result, sizes))
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
