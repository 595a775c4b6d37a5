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
import sys

from blast_ray.config import STAGES
from blast_ray.entry import UsageError, add_config_args, add_verbosity_args, load_config_from_args, main_wrapper

PROG = "python -m jobs.pipeline"


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """The job's arguments (also those of ``blast pipeline``)."""
    add_config_args(p)
    add_verbosity_args(p)
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)} (default: the config's)")
    p.add_argument("--from-stage", choices=STAGES, help="recompute this stage and the ones after it")
    p.add_argument("--force", action="store_true", help="recompute the selected stages even when committed")
    p.add_argument("--run-id", help="run id (default: a new timestamped id)")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_pipeline_args(p)
    return p


def run(args: argparse.Namespace, prog: str = PROG) -> int:
    """The job body: 0 when every selected stage succeeded or was skipped, 1 when one failed."""
    cfg = load_config_from_args(args)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip()) if args.stages else None
    for s in stages or ():
        if s not in STAGES:
            raise UsageError(f"--stages: unknown stage {s!r}; stages are {', '.join(STAGES)}")
    from blast_ray.pipeline import run_pipeline
    from blast_ray.report.console import print_summary
    from blast_ray.runtime import ensure_ray

    ensure_ray()  # one Ray connection for the whole DAG: RAY_ADDRESS / the job's cluster, else local
    result = run_pipeline(
        cfg, stages=stages, from_stage=args.from_stage,
        force=tuple(stages or cfg.stages) if args.force else (), run_id=args.run_id,
        use_committed_upstream=True,  # --stages: unlisted upstream stages come from the store
    )
    print_summary(cfg, result)
    if not result.ok:
        print(f"{prog}: FAILED at stage '{result.failed_stage}': {result.error}", file=sys.stderr)
        return 1
    print(f"{prog}: run {result.run_id} succeeded")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_wrapper(run, build_parser(), argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
