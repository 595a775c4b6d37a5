"""Pipeline scaling: etl -> profiles -> features -> graphs -> augment on synthetic Amazon dumps.

    .venv/bin/python benchmarks/pipeline_scaling.py --sizes 1M,3M,10M --work /tmp/pipeline-scaling
    .venv/bin/python benchmarks/pipeline_scaling.py --sizes 50k,150k          # a quick look

For each size, ``benchmarks/synth_amazon.py`` writes a dump (seeded, reused when present), then
each stage runs alone, in a fresh Python process, through ``run_pipeline`` (upstream from the
store). Each stage's figures are kept in ``<work>/figures-<size>.json`` (with the settings) as
soon as it finishes: a later call measures only the stages missing there (``--remeasure graphs``
measures a stage again, from the upstream outputs the store holds; ``--fresh`` all of them). While
a stage runs, a sampler thread reads the resident memory (psutil, every 0.2 s) of this process
(the driver) and of each of its descendants (Ray workers, raylet, Spark's JVM: the largest single one is "worker"). Profiles use
the template engine with ``profiles.batch_size`` 2,048 (``--profiles-batch-size``: the default 16
suits LLM engines; a template batch is one part file) and the Spark request builder at every size;
Spark at the config defaults (``etl.driver_memory`` 4g, 8 shuffle partitions); the FAISS index built
on all of this node's cores (``--index-build-cpus``). Features: on 2 CPU cores the offline
MiniLM encodes about 55 template profiles a second per thread, so every vector of the 10M size
(about 1.5M profiles) would take hours. By default (``--text-encoder minilm-embeddings``) the
stage therefore runs with MiniLM's own embedding layer and no transformer layers (a real
transformers model, built once under ``--work``, 384-d like MiniLM, about 30x faster): the
stage's streaming, shards, reuse and memory are measured at every size on every row, the graphs
stage gets every vector; and MiniLM's encoding cost is PROJECTED, not measured: both encoders
encode the same sample of that size's profiles (``--minilm-sample`` rows, one thread, as a
features actor does) and ``features.minilm_projected_seconds@<size>`` = measured seconds + rows x
(MiniLM - embedding-only seconds per row). ``--text-encoder minilm`` runs MiniLM on every row.

Synthetic data measures scale only: no quality figure is ever taken from it.

Ends with ``RESULT {json}``: ``<stage>.seconds@<size>``, ``<stage>.driver_peak_gib@<size>``,
``<stage>.worker_peak_gib@<size>``, ``<stage>.rows@<size>``, ``features.minilm_projected_seconds@<size>``
(with the embedding-only encoder), and the summaries
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
import shutil
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


def embedding_only_encoder(work: Path) -> str:
    """MiniLM with its transformer layers removed (token + position embeddings, LayerNorm; mean
    pooled by the features stage): a local transformers model folder, built once under ``work``."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from blast_ray.features.encoders import PACKAGED_MINILM, resolve_text_encoder

    dst = work / "encoders" / "minilm-embeddings"
    if not (dst / "config.json").exists():
        src = resolve_text_encoder(PACKAGED_MINILM)
        config = AutoConfig.from_pretrained(src)
        config.num_hidden_layers = 0
        tmp = dst.with_name(dst.name + ".tmp")
        AutoModel.from_pretrained(src, config=config).save_pretrained(tmp)
        AutoTokenizer.from_pretrained(src).save_pretrained(tmp)
        tmp.rename(dst)
    return str(dst)


def text_encoder(work: Path, args) -> str:
    from blast_ray.features.encoders import PACKAGED_MINILM

    return PACKAGED_MINILM if args.text_encoder == "minilm" else embedding_only_encoder(work)


def minilm_projection(cfg, seconds: float, rows: int, sample: int) -> dict[str, float]:
    """Seconds per row of MiniLM and of the embedding-only encoder on the same sample of the
    committed profiles (files spread over the table), one thread each; and the projection."""
    import pyarrow.parquet as pq

    from blast_ray.features.encoders import PACKAGED_MINILM, TextEncoder
    from blast_ray.profiles.artifacts import profiles_files
    from blast_ray.store import ArtifactStore
    from blast_ray.store.layout import committed_outputs

    out = committed_outputs(ArtifactStore(cfg.store), cfg.dataset.name, "profiles")[0]
    fs, paths = profiles_files(out)
    # a seeded random sample of rows from 16 random part files (items and users in proportion)
    import numpy as np

    rng = np.random.default_rng(0)
    texts: list[str] = []
    for i in sorted(rng.choice(len(paths), min(16, len(paths)), replace=False)):
        texts += [str(t) for t in pq.read_table(paths[i], columns=["text"], filesystem=fs)["text"].to_pylist()]
    texts = [texts[i] for i in rng.choice(len(texts), min(sample, len(texts)), replace=False)]
    per_row = {}
    for name, model in (("minilm", PACKAGED_MINILM), ("embedding_only", cfg.features.text_encoder)):
        enc = TextEncoder(model, cfg.features.text_pooling, threads=1)
        t = time.time()
        enc.encode(texts, cfg.features.batch_size)
        per_row[name] = (time.time() - t) / max(1, len(texts))
    return {"minilm_s_per_row": round(per_row["minilm"], 6), "embedding_only_s_per_row": round(per_row["embedding_only"], 6),
            "projected": round(seconds + rows * (per_row["minilm"] - per_row["embedding_only"]), 1)}


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
        # the Spark request builder at every size ('auto' switches at 1M interactions: one path measured)
        "profiles": {"engine": "template", "batch_size": args.profiles_batch_size, "request_builder": "spark"},
        "features": {"text_encoder": text_encoder(work, args)},
        "graphs": {"index_build_cpus": args.index_build_cpus, "index": args.graphs_index},
        "augment": {"num_blocks": args.augment_blocks if args.augment_blocks == "auto" else int(args.augment_blocks)},
    }, ROOT)


def run_stage(size: int, stage: str, work: Path, args) -> dict[str, float]:
    """One stage of one size in THIS process (a fresh one per stage: peaks are the stage's own)."""
    from blast_ray.pipeline import run_pipeline

    cfg = size_config(size, work, args)
    t = time.time()
    with PeakSampler() as peak:
        res = run_pipeline(cfg, stages=(stage,), use_committed_upstream=True, force=(stage,))
    secs = time.time() - t
    if not res.ok:
        raise SystemExit(f"[{size:,}] {res.error}")
    got = {f"{stage}.seconds@{size}": round(secs, 2),
           f"{stage}.driver_peak_gib@{size}": round(peak.driver / 2**30, 3),
           f"{stage}.worker_peak_gib@{size}": round(peak.worker / 2**30, 3),
           f"{stage}.rows@{size}": stage_rows(res.manifests[stage], stage)}
    if stage == "features" and args.text_encoder != "minilm":
        counts = res.manifests[stage].get("row_counts", {})
        rows = int(counts.get("item_text", 0)) + int(counts.get("user_text", 0))
        proj = minilm_projection(cfg, secs, rows, args.minilm_sample)
        got.update({f"features.minilm_s_per_row@{size}": proj["minilm_s_per_row"],
                    f"features.embedding_only_s_per_row@{size}": proj["embedding_only_s_per_row"],
                    f"features.minilm_projected_seconds@{size}": proj["projected"]})
    return got


def run_size(size: int, work: Path, seed: int, args, kept: dict[str, float], save) -> dict[str, float]:
    """Measure the stages of one size whose figures are not in ``kept`` (each in a fresh process);
    ``save(figures)`` after each stage (a later call resumes at the first stage not measured)."""
    dump = work / f"dump-{size}"
    if not (dump / "synth.json").exists():
        synth = _synth_module()
        t = time.time()
        synth.generate(dump, size, seed, Path(os.environ.get("BLAST_DATA_DIR", synth.DEFAULT_DATA)),
                       "Clothing_Shoes_and_Jewelry", 0.005, 0.001)
        print(f"[{size:,}] synthetic dump written in {time.time() - t:.0f} s", flush=True)
    todo = [st for st in STAGES if f"{st}.seconds@{size}" not in kept]
    out: dict[str, float] = {k: v for k, v in kept.items() if k.split(".")[0] not in todo}
    store = work / "store" / f"synth{size}"
    # every stage measured from nothing: no committed output, profile or vector of an earlier run of
    # this size to reuse (the store under --work is the benchmark's own). From etl: the whole store
    # of the size; from a later stage: the outputs of the stages measured now (the upstream ones,
    # committed by the run that measured them, are their input)
    if "etl" in todo:
        shutil.rmtree(store, ignore_errors=True)
    else:
        for st in todo:
            shutil.rmtree(store / "stages" / st, ignore_errors=True)
    for stage in todo:
        cmd = [sys.executable, __file__, "--one-stage", stage, "--sizes", str(size), "--work", str(work),
               "--shuffle-partitions", str(args.shuffle_partitions), "--spark-memory", args.spark_memory,
               "--augment-blocks", str(args.augment_blocks), "--profiles-batch-size", str(args.profiles_batch_size),
               "--text-encoder", args.text_encoder, "--minilm-sample", str(args.minilm_sample),
               "--index-build-cpus", str(args.index_build_cpus), "--graphs-index", args.graphs_index]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("STAGE ")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise SystemExit(f"[{size:,}] {stage} failed (exit {proc.returncode}): {' | '.join(tail)}")
        got = json.loads(lines[-1][len("STAGE "):])
        out.update(got)
        print(f"[{size:,}] {stage:9s} {got[f'{stage}.seconds@{size}']:8.1f} s  "
              f"driver {got[f'{stage}.driver_peak_gib@{size}']:6.2f} GiB  "
              f"largest worker {got[f'{stage}.worker_peak_gib@{size}']:6.2f} GiB  rows {got[f'{stage}.rows@{size}']:,}"
              + (f"  (MiniLM projected: {got[f'features.minilm_projected_seconds@{size}']:.0f} s)"
                 if f"features.minilm_projected_seconds@{size}" in got else ""),
              flush=True)
        save(out)
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
    ap.add_argument("--shuffle-partitions", type=int, default=8, help="etl.shuffle_partitions (the config default)")
    ap.add_argument("--spark-memory", default="4g", help="etl.driver_memory (the config default)")
    ap.add_argument("--augment-blocks", default="auto", help="augment.num_blocks (auto follows augment.task_memory_gib)")
    ap.add_argument("--profiles-batch-size", type=int, default=2048, help="profiles.batch_size (template rows per part file)")
    ap.add_argument("--text-encoder", choices=("minilm-embeddings", "minilm"), default="minilm-embeddings",
                    help="features encoder: MiniLM's embedding layer only (MiniLM's cost projected from a sample) or MiniLM")
    ap.add_argument("--minilm-sample", type=int, default=512, help="profiles encoded by both encoders for the projection")
    ap.add_argument("--index-build-cpus", type=int, default=os.cpu_count() or 1,
                    help="graphs.index_build_cpus: CPUs and FAISS threads of the index-building task (default: this node's)")
    ap.add_argument("--graphs-index", choices=("auto", "flat", "hnsw", "ivf"), default="auto",
                    help="graphs.index (auto: exact flat up to graphs.exact_max_rows rows, HNSW above; hnsw: the "
                         "approximate index at every size, so graphs.time_exponent measures one method)")
    ap.add_argument("--fresh", action="store_true", help="measure every size again (default: reuse figures-<size>.json)")
    ap.add_argument("--remeasure", default="", metavar="STAGES",
                    help="comma-separated stages to measure again at every size (and the ones after them keep "
                         "their figures; e.g. graphs after a change to the graphs stage)")
    ap.add_argument("--one-stage", choices=STAGES, help=argparse.SUPPRESS)  # internal: one stage, one size
    args = ap.parse_args(argv)
    sizes = sorted(synth.parse_size(s) for s in args.sizes.split(","))
    remeasure = {st.strip() for st in args.remeasure.split(",") if st.strip()}
    if remeasure - set(STAGES):
        ap.error(f"--remeasure: unknown stages {sorted(remeasure - set(STAGES))}; stages are {', '.join(STAGES)}")
    work = Path(args.work)
    if args.one_stage:
        got = run_stage(sizes[0], args.one_stage, work, args)
        print("STAGE " + json.dumps(got), flush=True)
        return got
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": f"{platform.node()} {os.cpu_count()} cpus "
                               f"{psutil.virtual_memory().total / 2**30:.0f} GiB", "seed": args.seed,
                    "sizes": ",".join(str(s) for s in sizes), "text_encoder": args.text_encoder,
                    "profiles_batch_size": args.profiles_batch_size, "augment_blocks": args.augment_blocks,
                    "index_build_cpus": args.index_build_cpus, "graphs_index": args.graphs_index}
    for size in sizes:
        # one size's figures are kept beside its dump (same settings): a later call with more sizes
        # measures only the new ones (--fresh measures again)
        saved = work / f"figures-{size}.json"
        settings = {k: result[k] for k in ("seed", "text_encoder", "profiles_batch_size", "augment_blocks",
                                            "index_build_cpus", "graphs_index")}
        settings.update(shuffle_partitions=args.shuffle_partitions, spark_memory=args.spark_memory)
        kept = json.loads(saved.read_text()) if saved.exists() and not args.fresh else {}
        figures = kept["figures"] if kept.get("settings") == settings else {}
        figures = {k: v for k, v in figures.items() if k.split(".")[0] not in remeasure}
        if figures:
            print(f"[{size:,}] kept figures of an earlier run with the same settings ({saved}): "
                  f"{', '.join(st for st in STAGES if f'{st}.seconds@{size}' in figures)}", flush=True)
        if any(f"{st}.seconds@{size}" not in figures for st in STAGES):
            figures = run_size(size, work, args.seed, args, figures, lambda f, path=saved: path.write_text(
                json.dumps({"settings": settings, "figures": f})))
        result.update(figures)
    result.update(summarize(result, sizes))
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
