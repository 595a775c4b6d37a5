"""``blast tune`` arguments and command (wired into ``blast_ray.cli`` with one parser + one branch)."""

from __future__ import annotations

import argparse
import sys

from blast_ray.tune.runner import DEFAULT_TRIALS, TuneOptions

_DEFAULTS = TuneOptions()


def add_tune_args(p: argparse.ArgumentParser) -> None:
    from blast_ray.entry import add_config_args

    add_config_args(p)  # --config, --set, --store (a local folder for tune)
    p.add_argument("--space", required=True, metavar="PATH", help="search-space YAML, e.g. configs/spaces/blast.yaml")
    p.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                   help=f"trial budget, Tune's num_samples (default {DEFAULT_TRIALS}, the same for every model)")
    p.add_argument("--max-epochs", type=int, default=_DEFAULTS.max_epochs, help="epochs per trial at most (ASHA's max_t)")
    p.add_argument("--grace-epochs", type=int, default=_DEFAULTS.grace_epochs,
                   help="ASHA grace period: no trial stops before this many epochs")
    p.add_argument("--cpus-per-trial", type=float, default=_DEFAULTS.cpus_per_trial, help="CPUs per trial (fractions are fine)")
    p.add_argument("--max-concurrent", type=int, default=_DEFAULTS.max_concurrent, help="trials running at once")
    p.add_argument("--seed", type=int, default=None, help="search seed (default: the config's train.seed)")
    p.add_argument("--name", default=None, help="experiment name (default: <space>-<hash of config, space and budget>)")
    p.add_argument("--start-from", default=None, metavar="EXPERIMENT",
                   help="staged search: start from the chosen values of a finished tune (its folder or tune_summary.json; "
                        "e.g. lightgcn's for blast): first trial = this space's fallback at those values, second = the "
                        "config's values of every tuned key with those on top (both count against --trials)")
    p.add_argument("--also-from", action="append", default=[], metavar="EXPERIMENT",
                   help="also evaluate a further simpler model's choice as one point of this space (its folder or "
                        "tune_summary.json; repeatable), e.g. freedom's for blast: every part off, the shared keys "
                        "at its values; counts against --trials")
    p.add_argument("--rerank", type=int, default=_DEFAULTS.rerank, metavar="N",
                   help="choose among the top N trials and the --start-from/--also-from points re-trained at the "
                        "config's full train.epochs, on validation (default 0: the best trial within --max-epochs; "
                        "benchmarks/quality_tables.py uses 3)")
    p.add_argument("--resume", action="store_true", help="restore the experiment of this name (Tuner.restore) instead of starting it")
    p.add_argument("--out", default=None, help="also write the best configuration YAML to this file")
    p.add_argument("--no-final", dest="final", action="store_false",
                   help="skip the final train + evaluate of the chosen configuration (then no test metric is computed)")


def tune_command(args: argparse.Namespace) -> int:
    from blast_ray.tune.artifacts import start_values_from
    from blast_ray.tune.runner import format_outcome, run_tune

    try:
        start = start_values_from(args.start_from) if args.start_from else {}
        also = tuple(start_values_from(p, "--also-from") for p in args.also_from)
    except ValueError as e:
        print(f"blast tune: {e}".splitlines()[0], file=sys.stderr)
        return 2
    options = TuneOptions(trials=args.trials, max_epochs=args.max_epochs, grace_epochs=args.grace_epochs,
                          cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent, seed=args.seed,
                          name=args.name, resume=args.resume, final=args.final, start_values=start,
                          also_from=also, rerank=args.rerank)
    try:
        outcome = run_tune(args.config, args.space, options, overrides=args.overrides, store=args.store, out=args.out)
    except RuntimeError as e:
        print(f"blast tune: {e}".splitlines()[0], file=sys.stderr)
        return 1
    print(format_outcome(outcome))
    return 0
