"""The ETL as a Spark application.

    spark-submit spark/etl_job.py --config configs/ml-100k.yaml --store ./blast-data [--set etl.kcore=10]
    spark-submit --master spark://host:7077 spark/etl_job.py --config ... --store s3://bucket/blast

Under spark-submit the master comes from spark-submit; run with plain ``python`` it uses
``etl.master`` (``--master`` overrides). Importable: ``from spark.etl_job import main``.
Runs through the pipeline driver, so a committed output with the same inputs is skipped.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="etl_job", description="blast-ray Spark ETL: raw dumps -> Parquet")
    p.add_argument("--config", required=True)
    p.add_argument("--store", help="local folder or s3://bucket/prefix (default: the config's store)")
    p.add_argument("--master", help="Spark master when not launched by spark-submit (default: etl.master)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--force", action="store_true", help="recompute even when committed")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from blast_ray.config import ConfigError, load_config
    from blast_ray.pipeline import run_pipeline

    try:
        cfg = load_config(args.config, overrides=args.overrides)
    except ConfigError as e:
        print(f"etl_job: {e}", file=sys.stderr)
        return 2
    if args.store:
        cfg.store = args.store
    if args.master:
        cfg.etl.master = args.master
    try:
        result = run_pipeline(cfg, stages=("etl",), force=("etl",) if args.force else ())
    except (FileNotFoundError, ValueError) as e:
        print(f"etl_job: {e}".splitlines()[0], file=sys.stderr)
        return 2
    if not result.ok:
        print(f"etl_job: {result.error}", file=sys.stderr)
        return 1
    from blast_ray.store import layout

    m = result.manifests["etl"]
    where = "/".join(layout.stage_parts(cfg.dataset.name, "etl", m["fingerprint"]))
    print(f"etl {result.status['etl']}: {m['row_counts']} -> {cfg.store}/{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
