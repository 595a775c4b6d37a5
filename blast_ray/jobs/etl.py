"""The ETL as a Spark application.

    spark-submit spark/etl_job.py --config configs/ml-100k.yaml --store ./blast-data [--set etl.kcore=10]
    spark-submit --master spark://host:7077 spark/etl_job.py --config ... --store s3://bucket/blast

Under spark-submit the master comes from spark-submit; run with plain ``python`` it uses
``etl.master`` (``--master`` overrides). ``spark/etl_job.py`` in the repository is a launcher for
this module (``from blast_ray.jobs.etl import main``). Runs through the pipeline driver, so a
committed output with the same inputs is skipped.
"""

from __future__ import annotations

import argparse
import sys

from blast_ray.entry import add_config_args, add_verbosity_args, load_config_from_args, main_wrapper
from blast_ray.store import layout

PROG = "etl_job"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="blast-ray Spark ETL: raw dumps -> Parquet")
    add_config_args(p)
    add_verbosity_args(p)
    p.add_argument("--master", help="Spark master when not launched by spark-submit (default: etl.master)")
    p.add_argument("--force", action="store_true", help="recompute even when committed")
    return p


def run(args: argparse.Namespace, prog: str = PROG) -> int:
    from blast_ray.pipeline import run_pipeline

    cfg = load_config_from_args(args)
    if args.master:
        cfg.etl.master = args.master
    result = run_pipeline(cfg, stages=("etl",), force=("etl",) if args.force else ())
    if not result.ok:
        print(f"{prog}: {result.error}", file=sys.stderr)
        return 1
    m = result.manifests["etl"]
    where = "/".join(layout.stage_parts(cfg.dataset.name, "etl", m["fingerprint"]))
    print(f"etl {result.status['etl']}: {m['row_counts']} -> {cfg.store}/{where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_wrapper(run, build_parser(), argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
