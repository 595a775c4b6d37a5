"""The whole BLAST DAG as one Ray job.

Locally (starts an embedded Ray via ``blast_ray.runtime.ensure_ray``)::

    python -m jobs.pipeline --config configs/ml-100k.yaml

On a cluster (the same command, submitted; stages connect through ``RAY_ADDRESS``)::

    ray job submit --address http://HEAD:8265 --working-dir . \\
        --runtime-env-json '{"env_vars": {"BLAST_DATA_DIR": "/data"}}' \\
        -- python -m jobs.pipeline --config configs/ml-100k.yaml --store s3://bucket/blast

Committed stages are skipped by manifest; the exit code is 1 when a stage fails (the message
names it), 2 for a bad config/argument.
"""

from __future__ import annotations

import argparse
import logging
import sys

from blast_ray.config import STAGES, ConfigError, load_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="pipeline YAML")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)} (default: the config's)")
    p.add_argument("--from-stage", choices=STAGES, help="recompute this stage and the ones after it")
    p.add_argument("--store", help="artifact store: local folder or s3://bucket/prefix (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--force", action="store_true", help="recompute the selected stages even when committed")
    p.add_argument("--run-id", help="run id (default: a new timestamped id)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = load_config(args.config, overrides=args.overrides)
        if args.store:
            cfg.store = args.store
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip()) if args.stages else None
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"jobs.pipeline: {e}", file=sys.stderr)
        return 2
    from blast_ray.pipeline import run_pipeline
    from blast_ray.report.console import print_summary
    from blast_ray.runtime import ensure_ray

    ensure_ray()  # one Ray connection for the whole DAG: RAY_ADDRESS / the job's cluster, else local
    try:
        result = run_pipeline(
            cfg, stages=stages, from_stage=args.from_stage,
            force=tuple(stages or cfg.stages) if args.force else (), run_id=args.run_id,
            use_committed_upstream=True,  # --stages: unlisted upstream stages come from the store
        )
    except ValueError as e:
        print(f"jobs.pipeline: {e}", file=sys.stderr)
        return 2
    print_summary(cfg, result)
    if not result.ok:
        print(f"jobs.pipeline: FAILED at stage '{result.failed_stage}': {result.error}", file=sys.stderr)
        return 1
    print(f"jobs.pipeline: run {result.run_id} succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
