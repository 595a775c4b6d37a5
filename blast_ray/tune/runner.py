"""``blast tune``: Ray Tune over one dataset config and one search space, chosen on VALIDATION.

What one call does (:func:`run_tune`):

1. Loads the dataset config (+ ``--set`` overrides), the space (:mod:`blast_ray.tune.space`), applies
   the space's ``fixed`` values, and checks every key and value against the config.
2. Runs the upstream stages once for that base config through ``run_pipeline`` (etl, profiles,
   features, graphs, augment; skipped when committed for the same fingerprint).
3. Runs a ``ray.tune.Tuner``: ``num_samples`` = the trial budget (``--trials``, the same for every
   model), a seeded ``BasicVariantGenerator`` (random search; the space's ``fallback`` point, the
   simpler model it extends, is evaluated first), an ``ASHAScheduler`` on the validation metric the
   train stage selects on (``valid.<evaluate.select_metric>``, default ``valid.recall@20``;
   ``time_attr = training_iteration`` = one epoch), ``max_concurrent`` trials of ``cpus_per_trial``
   CPUs. The experiment lives at ``<store>/<dataset>/tune/<experiment>/`` (Tune's ``storage_path``
   is ``<store>/<dataset>/tune``) and is restored with ``Tuner.restore(..., resume_errored=True)``
   when ``--resume`` is given and ``Tuner.can_restore`` finds it.
4. A trial (:func:`_trial`): the base config with the sampled values; re-runs graphs/augment
   through ``run_pipeline`` only if its values change them (cached per fingerprint: trials with the
   same values share the output); builds the training inputs exactly as the train stage does; trains
   for at most ``--max-epochs`` epochs, reporting the VALIDATION metrics of every epoch to Tune with
   a checkpoint of the training state (resume). Test metrics are never computed in a trial.
5. Picks the trial with the best validation metric (any epoch), writes ``best_config.yaml`` (the
   dataset config with the chosen values, a comment naming the run) and ``tune_summary.json`` into
   the experiment folder (and ``--out``), and with ``final`` (default) runs the pipeline's train +
   evaluate once on the chosen configuration: the only place test metrics appear.
   With ``--rerank N`` (``TuneOptions.rerank``) the choice is made among the top N trials and the
   simpler-model points (``--start-from`` point 1, each ``--also-from``) re-trained at the config's
   full epochs, on validation only (:mod:`blast_ray.tune.rerank`): capped trials and ASHA favour fast
   starters. The experiment itself does not depend on it, so ``--resume --rerank N`` re-ranks a
   finished tune.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from blast_ray.config import ConfigError, PipelineConfig, config_from_dict, load_config
from blast_ray.store import ArtifactStore, StageOutput, layout
from blast_ray.store.hashing import stable_hash
from blast_ray.store.names import validate_name
from blast_ray.tune import artifacts
from blast_ray.tune.space import SearchSpace, load_space

log = logging.getLogger("blast_ray.tune")

UPSTREAM_STAGES = ("etl", "profiles", "features", "graphs", "augment")


def metric_key(cfg: PipelineConfig) -> str:
    """The validation metric trials are scheduled and chosen on: the one the train stage selects its
    best epoch on (``evaluate.select_metric``, default recall@20), prefixed ``valid.``."""
    return f"valid.{cfg.evaluate.select_metric}"
DEFAULT_TRIALS = 24  # the same budget for every model unless --trials says otherwise


@dataclass(frozen=True)
class TuneOptions:
    """Settings of one ``blast tune`` call (validated at construction; one-line errors)."""

    trials: int = DEFAULT_TRIALS  # num_samples: the trial budget, the same per model
    max_epochs: int = 30  # epochs per trial at most (ASHA's max_t)
    grace_epochs: int = 2  # ASHA grace period: no trial is stopped before this many epochs
    reduction_factor: float = 3.0  # ASHA: keep the top 1/rf of trials at each rung
    cpus_per_trial: float = 1.0  # fractions are fine
    max_concurrent: int = 1  # trials running at once
    seed: int | None = None  # search seed (None: the config's train.seed)
    name: str | None = None  # experiment name (None: <space>-<hash of config, space and options>)
    resume: bool = False  # restore the experiment of the same name instead of starting one
    final: bool = True  # train + evaluate the chosen configuration (test metrics) after tuning
    # Staged search: the chosen values of a simpler model's tune (e.g. LightGCN's best for BLAST),
    # dotted keys; those this space shares start the search (see :func:`start_points`). Empty: the
    # space's fallback point alone is evaluated first.
    start_values: dict[str, Any] = field(default_factory=dict)
    # Further simpler models' chosen values, each evaluated as a point of this space after the start
    # points (:func:`embedded_point`: every part off, their shared keys on top), e.g. FREEDOM's best
    # for BLAST, whose space holds FREEDOM exactly (user branch and OT off).
    also_from: tuple[dict[str, Any], ...] = ()
    # >= 2: the top `rerank` trials (and the simpler-model points above) re-trained at the config's
    # full epochs, the best on validation chosen (:mod:`blast_ray.tune.rerank`); 0 or 1: the tune's
    # best trial within its capped epochs
    rerank: int = 0

    def __post_init__(self) -> None:
        def fail(key: str, msg: str) -> None:
            raise ConfigError(f"tune option '{key}': {msg}")

        if self.trials < 1:
            fail("trials", f"must be >= 1, got {self.trials}")
        if self.max_epochs < 1:
            fail("max_epochs", f"must be >= 1, got {self.max_epochs}")
        if not 1 <= self.grace_epochs <= self.max_epochs:
            fail("grace_epochs", f"must be in [1, max_epochs={self.max_epochs}], got {self.grace_epochs}")
        if self.reduction_factor <= 1:
            fail("reduction_factor", f"must be > 1, got {self.reduction_factor}")
        if self.cpus_per_trial <= 0:
            fail("cpus_per_trial", f"must be > 0, got {self.cpus_per_trial}")
        if self.max_concurrent < 1:
            fail("max_concurrent", f"must be >= 1, got {self.max_concurrent}")
        if self.rerank < 0:
            fail("rerank", f"must be >= 0 (0: off), got {self.rerank}")
        if self.name is not None:
            try:
                validate_name(self.name, "name")
            except ValueError as e:
                fail("name", str(e).split(": ", 1)[-1])
        for k, v in [kv for d in (self.start_values, *self.also_from) for kv in d.items()]:
            if not isinstance(k, str) or k.count(".") != 1 or isinstance(v, (dict, list)):
                fail("start_values", f"{k!r}: {v!r} is not a dotted config key with one value (e.g. train.lr: 0.005)")


@dataclass
class TuneOutcome:
    """What :func:`run_tune` returns (and prints)."""

    experiment: str
    experiment_path: str
    restored: bool  # True: Tuner.restore, False: a new experiment
    n_trials: int
    best_values: dict[str, Any]  # the chosen dotted values (tuned keys only)
    metric: str  # the validation metric trials were chosen on (metric_key)
    best_metric: float  # its best value in the chosen trial (over its epochs; re-ranked: at full length)
    best_epoch: int  # 1-based epoch of that value
    best_yaml: str
    kept: dict[str, bool]  # which parts of the model the chosen configuration keeps
    trials: list[dict[str, Any]] = field(default_factory=list)  # per trial: id, status, values, best valid metric
    final_metrics: dict[str, Any] | None = None  # valid.* and test.* of the final run (final=True)
    final_run_id: str | None = None
    # the full-length re-rank (options.rerank >= 2): every candidate (rerank.Candidate.as_dict) and
    # the index of the chosen one
    rerank: list[dict[str, Any]] = field(default_factory=list)
    rerank_chosen: int | None = None


# ---- configs -------------------------------------------------------------------------------------

def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """``tree[a][b] = value`` for ``key = "a.b"`` (creating the section mapping if absent)."""
    section, _, name = key.partition(".")
    node = tree.setdefault(section, {})
    if not isinstance(node, dict):
        raise ConfigError(f"config key '{section}' is not a section; cannot set {key}")
    node[name] = value


def config_with(base: PipelineConfig, values: dict[str, Any]) -> PipelineConfig:
    """A validated copy of ``base`` with the dotted ``values`` applied (ConfigError names the key)."""
    data = base.to_dict()
    for k, v in values.items():
        set_dotted(data, k, v)
    return config_from_dict(data)


def trial_config(base: PipelineConfig, values: dict[str, Any], max_epochs: int) -> PipelineConfig:
    """The config one trial trains: ``base`` + sampled values, at most ``max_epochs`` epochs,
    validation every epoch (the scheduler compares trials per epoch), one process, no bar."""
    cfg = config_with(base, values)
    cfg.train.epochs = min(cfg.train.epochs, max_epochs)
    cfg.train.eval_every = 1
    cfg.train.num_workers = 1
    cfg.train.progress = False
    cfg.train.warm_start_from = None
    if cfg.augment.enabled and cfg.augment.ratio == 0 and not cfg.augment.restrict_negatives:
        # No OT pair and no restriction: the augment output would not change the training at all;
        # disabling the stage skips a Sinkhorn run whose result is unused (same training, bit for bit).
        cfg.augment.enabled = False
    return cfg


def start_points(space: SearchSpace, base: PipelineConfig, start_values: dict[str, Any],
                 also_from: tuple[dict[str, Any], ...] = ()) -> list[dict[str, Any]]:
    """The points Tune evaluates first (``points_to_evaluate``, in this order; they count against the
    trial budget; keys a point leaves out are sampled).

    Without ``start_values``: the space's fallback point (the simpler model it extends), if any.
    With ``start_values`` (a simpler model's chosen values, e.g. LightGCN's best for BLAST; only the
    keys this space tunes are used, at least one must be): the staged search of a bigger space,
    1. the fallback point with the shared values = the simpler model at ITS tuned hyperparameters,
       so the validation choice can always fall back to it;
    2. every tuned key at the base config's value (the shipped configuration's parts) with the
       shared values on top: the full model at the simpler model's tuned hyperparameters. Where the
       shipped config has the parts off already (a config that carries a tune's fallback choice),
       the method's defaults (the schema's, i.e. the paper's parts) take their place, so a re-tune
       still tries the full model; left out when it still equals point 1.
    Then one point per ``also_from`` entry (:func:`embedded_point`), unless already there.
    Each point is validated with the config (ConfigError naming the key).
    """
    points = start_values_points(space, base, start_values) if start_values else (
        [dict(space.fallback)] if space.fallback else [])
    for values in also_from:
        p = embedded_point(space, values)
        if p not in points:
            points.append(p)
    for i, p in enumerate(points, 1):
        try:
            config_with(base, p)
        except ValueError as e:
            raise ConfigError(f"tune start point {i} {p}: {str(e).splitlines()[0]}") from None
    return points


def start_values_points(space: SearchSpace, base: PipelineConfig, start_values: dict[str, Any]) -> list[dict[str, Any]]:
    """Points 1 and 2 of :func:`start_points` (not validated)."""
    shared = {k: v for k, v in start_values.items() if k in space.keys}
    if not shared:
        raise ConfigError(f"tune start values {sorted(start_values)} share no key with the space {space.source} "
                          f"({', '.join(space.keys)}); start from the tune of a model this space extends "
                          "(e.g. lightgcn for blast)")
    d = base.to_dict()
    shipped = {k: d[k.split(".", 1)[0]][k.split(".", 1)[1]] for k in space.keys}
    points = [embedded_point(space, shared), {**shipped, **shared}]
    if points[1] == {**points[1], **points[0]}:
        defaults = PipelineConfig.model_construct().to_dict()  # the schema's defaults, no dataset needed
        method = {k: defaults[k.split(".", 1)[0]][k.split(".", 1)[1]] for k in space.keys}
        points[1] = {**shipped, **{k: v for k, v in method.items() if k in space.fallback}, **shared}
    if points[1] == {**points[1], **points[0]}:
        points = points[:1]
    return points


def embedded_point(space: SearchSpace, values: dict[str, Any]) -> dict[str, Any]:
    """A simpler model's chosen ``values`` as a point of ``space``: the fallback (every part off)
    with the keys both spaces tune on top. BLAST's space holds FREEDOM this way (user graph, user
    term and OT off; FREEDOM's item graph, pruning and feature term at its values)."""
    shared = {k: v for k, v in values.items() if k in space.keys}
    if not shared:
        raise ConfigError(f"tune values {sorted(values)} share no key with the space {space.source}")
    return {**space.fallback, **shared}


def kept_components(cfg: PipelineConfig) -> dict[str, bool]:
    """Which parts of BLAST a configuration keeps (False everywhere = LightGCN with the BPR loss).

    item_graph / user_graph: the S_I / S_U branch propagates (n_layers > 0; with 0 layers the
    branch is off); pruning: prune_ratio > 0; ot_augmentation:
    augmented pairs are added (enabled and ratio > 0); negative_restriction: negatives exclude the
    false-negative candidates G; item_feature_loss / user_profile_loss: the auxiliary BPR terms.
    """
    t, a = cfg.train, cfg.augment
    side = t.model in ("freedom", "blast")
    return {
        "item_graph": side and t.n_layers_ii > 0,
        "user_graph": t.model == "blast" and cfg.graphs.user_graph and t.n_layers_uu > 0,
        "pruning": side and t.prune_ratio > 0,
        "ot_augmentation": bool(a.enabled and a.ratio > 0),
        "negative_restriction": bool(a.enabled and a.restrict_negatives),
        "item_feature_loss": side and t.reg_weight > 0,
        "user_profile_loss": t.model == "blast" and t.user_reg_weight > 0,
        "graph_propagation": t.model != "bpr" and t.n_layers_ui > 0,
    }


def _relocate_paths(raw: dict[str, Any], src_dir: Path, dst_dir: Path) -> None:
    """Relative dataset paths in ``raw`` are relative to ``src_dir``; rewrite them for ``dst_dir``."""
    def move(p: str) -> str:
        if "://" in p or os.path.isabs(p) or p.startswith("${") or p.startswith("~"):
            return p
        return os.path.relpath((src_dir / p).resolve(), dst_dir.resolve())

    ds = raw.get("dataset") or {}
    if isinstance(ds.get("paths"), dict):
        ds["paths"] = {k: move(str(v)) for k, v in ds["paths"].items()}
    feats = raw.get("features") or {}
    if feats.get("visual_features"):
        feats["visual_features"] = move(str(feats["visual_features"]))


def best_config_yaml(config_path: Path, overrides: list[str], values: dict[str, Any], header: str,
                     out_dir: Path | None = None) -> str:
    """The dataset config file with ``overrides`` and the chosen dotted ``values`` applied, as YAML
    text starting with ``header`` (comment lines). Relative data paths are rewritten for a file in
    ``out_dir`` (default: the config's own folder). Other comments of the source file are not kept."""
    raw = yaml.safe_load(config_path.read_text()) or {}
    for o in overrides:
        k, _, v = o.partition("=")
        parts = k.strip().split(".")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(v) if v != "" else ""
    for k, v in values.items():
        set_dotted(raw, k, v)
    if out_dir is not None and out_dir.resolve() != config_path.parent.resolve():
        _relocate_paths(raw, config_path.parent, out_dir)
    body = yaml.safe_dump(raw, sort_keys=False, default_flow_style=False)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body


# ---- upstream stages -----------------------------------------------------------------------------

def upstream_stages(cfg: PipelineConfig) -> tuple[str, ...]:
    """The stages before train that the config runs (``cfg.stages``; a config may leave out e.g.
    the graphs for an ID-only baseline): etl always."""
    return ("etl", *(s for s in UPSTREAM_STAGES[1:] if s in cfg.stages))


def upstream_outputs(cfg: PipelineConfig, run_id: str, lock_path: str | None = None) -> dict[str, StageOutput]:
    """Committed outputs of the upstream stages for ``cfg`` through ``run_pipeline`` (each stage runs only
    when its fingerprint has no committed output). ``lock_path``: a file lock held around the run so
    concurrent trials never write the same stage output at once."""
    from blast_ray.pipeline import run_pipeline

    with _file_lock(lock_path):
        res = run_pipeline(cfg, stages=upstream_stages(cfg), run_id=run_id)
    if not res.ok:
        raise RuntimeError(f"tune: upstream stages failed: {res.error}")
    store = ArtifactStore(cfg.store)
    return {s: StageOutput(store, cfg.dataset.name, s, m["fingerprint"], m.get("config"), m.get("inputs", {}))
            for s, m in res.manifests.items() if s in UPSTREAM_STAGES}


@contextlib.contextmanager
def _file_lock(path: str | None):
    if path is None:
        yield
        return
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---- the ONE adapter into the training code ------------------------------------------------------

def train_with_epoch_reports(
    cfg: PipelineConfig,
    outputs: dict[str, StageOutput],
    on_epoch: Callable[[dict[str, Any], Callable[[], bytes]], None],
    resume_state: bytes | None = None,
) -> None:
    """Train ``cfg.train`` on the stage ``outputs`` (the train stage's inputs, built by its own
    helper) and call ``on_epoch(row, state_bytes)`` after every epoch: ``row`` is the trainer's
    history row (epoch, loss, valid.* metrics), ``state_bytes()`` serialises the full training state
    (for a Tune checkpoint). ``resume_state``: such bytes, to continue a trial. Only validation
    metrics are computed here.

    ADAPTER: the only function of ``blast_ray.tune`` that calls into ``blast_ray.train`` (the
    train stage's input builder, the epoch loop with its per-epoch hook, the state (de)serialisers).
    Re-point it when the training code moves.
    """
    from blast_ray.etl.artifacts import load_interactions
    from blast_ray.pipeline import StageContext
    from blast_ray.ranking.metrics import users_per_block
    from blast_ray.train.checkpoints import state_from_bytes, state_to_bytes
    from blast_ray.train.loop import EvalPlan, train_loop
    from blast_ray.train.stage import _side_inputs

    store = ArtifactStore(cfg.store)
    ctx = StageContext(cfg=cfg, store=store, run_id="tune-trial", outputs=dict(outputs))
    inputs = _side_inputs(ctx, load_interactions(outputs["etl"]))
    ev = cfg.evaluate
    train_loop(
        cfg.train, inputs, EvalPlan(ks=tuple(ev.ks), select_metric=ev.select_metric,
                                    batch_users=users_per_block(inputs.data.n_items, ev.block_memory_gib, ev.batch_users)),
        start=state_from_bytes(resume_state) if resume_state else None,
        on_epoch=lambda state, row: on_epoch(row, lambda: state_to_bytes(state)),
    )


# ---- the trial -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrialSetup:
    """What every trial receives (through ``tune.with_parameters``)."""

    base: PipelineConfig  # dataset config + overrides + the space's fixed values; absolute store
    max_epochs: int
    experiment: str
    lock_path: str
    metric: str  # metric_key(base): the validation metric reported per epoch


def _trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """One Tune trial: one training of ``setup.base`` + ``config``, valid.* reported per epoch."""
    import ray
    import ray.tune as tune
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    cfg = trial_config(setup.base, config, setup.max_epochs)
    trial_id = tune.get_context().get_trial_id()
    # The pipeline call runs in a task OUTSIDE the trial's placement group: Tune captures a trial's
    # child tasks into its bundle ({"CPU": cpus_per_trial}), where the graphs stage's 1-CPU tasks
    # never fit. The task itself takes no CPU (it waits on the stage's own tasks).
    outside = ray.remote(num_cpus=0, scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    outputs = ray.get(outside(upstream_outputs).remote(
        cfg, run_id=f"tune-{setup.experiment}-{trial_id}", lock_path=setup.lock_path))
    resume = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = artifacts.read_trial_state(d)

    def on_epoch(row: dict[str, Any], state_bytes: Callable[[], bytes]) -> None:
        metrics = {k: float(v) for k, v in row.items()
                   if k.startswith("valid.") or k in ("epoch", "loss", "train_seconds", "eval_seconds")}
        if setup.metric not in metrics:
            return  # trial configs validate every epoch; a row without the metric is not reported
        with tempfile.TemporaryDirectory() as d:
            artifacts.write_trial_state(d, state_bytes())
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    train_with_epoch_reports(cfg, outputs, on_epoch, resume)


# ---- the driver ----------------------------------------------------------------------------------

def experiment_name(space: SearchSpace, base: PipelineConfig, options: TuneOptions) -> str:
    """``<space>-<hash>``: the same config, space and budget give the same name (so ``--resume``
    finds it); anything else gives another."""
    cfg = base.to_dict()
    cfg.pop("store", None)
    key = {"space": space.as_dict(), "config": cfg, "trials": options.trials, "max_epochs": options.max_epochs,
           "grace": options.grace_epochs, "rf": options.reduction_factor, "seed": options.seed}
    if options.start_values:  # a different start is another experiment (older names stay unchanged)
        key["start_values"] = dict(sorted(options.start_values.items()))
    if options.also_from:
        key["also_from"] = [dict(sorted(d.items())) for d in options.also_from]
    return f"{space.name}-{stable_hash(key, 10)}"


def _check_free_cpus(space: SearchSpace, base: PipelineConfig, options: TuneOptions, cluster_cpus: float) -> None:
    """Trials that re-run graphs/augment start Ray tasks (graphs: 1 CPU each; augment: 0.5 CPU per
    row block) next to the running trials: leave them room, or they would wait forever."""
    if not any(k.split(".")[0] in ("graphs", "augment") for k in space.keys):
        return
    blocks = base.augment.num_blocks
    need = max(1.0, 0.5 * (blocks if isinstance(blocks, int) else 2))  # auto: at least 2 actors fit (0.5 CPU each or less)
    free = cluster_cpus - options.cpus_per_trial * options.max_concurrent
    if free < need:
        raise ConfigError(
            f"tune options: cpus_per_trial x max_concurrent = {options.cpus_per_trial * options.max_concurrent:g} of the "
            f"cluster's {cluster_cpus:g} CPUs leaves {free:g} for the graphs/augment tasks this space's trials start "
            f"(they need {need:g}); lower --cpus-per-trial or --max-concurrent")


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _build_tuner(trainable, space: SearchSpace, options: TuneOptions, seed: int, storage_path: str, name: str,
                 metric: str, points: list[dict[str, Any]]):
    import ray.tune as tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    searcher = BasicVariantGenerator(
        points_to_evaluate=[dict(p) for p in points] or None,
        max_concurrent=options.max_concurrent,
        random_state=seed,
    )
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=options.max_epochs,
                              grace_period=options.grace_epochs, reduction_factor=options.reduction_factor)
    return tune.Tuner(
        trainable,
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(metric=metric, mode="max", search_alg=searcher, scheduler=scheduler,
                                    num_samples=options.trials, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )


def _trial_rows(grid, metric: str) -> list[dict[str, Any]]:
    rows = []
    for r in grid:
        df = r.metrics_dataframe
        has = df is not None and metric in df.columns and len(df)
        rows.append({
            "trial_id": (r.metrics or {}).get("trial_id") or Path(r.path).name,
            "status": "error" if r.error else "ok",
            "values": dict(r.config or {}),
            metric: float(df[metric].max()) if has else None,
            "best_epoch": int(df["training_iteration"].iloc[int(df[metric].to_numpy().argmax())]) if has else None,
            "epochs": int(len(df)) if df is not None else 0,
            "seconds": float(df["time_total_s"].iloc[-1]) if df is not None and "time_total_s" in df.columns and len(df)
            else None,  # the trial's own training time (kept across a restore, unlike the wall time)
            "reported_keys": sorted(df.columns) if df is not None else [],
            "error": str(r.error).splitlines()[0] if r.error else None,
        })
    return rows


def run_tune(
    config_path: str | Path,
    space_path: str | Path,
    options: TuneOptions = TuneOptions(),
    *,
    overrides: list[str] | None = None,
    store: str | None = None,
    out: str | Path | None = None,
) -> TuneOutcome:
    """Tune the model of ``space_path`` on the dataset of ``config_path`` (see the module doc).

    Returns a :class:`TuneOutcome`; writes ``best_config.yaml`` and ``tune_summary.json`` into the
    experiment folder and ``best_config.yaml`` also to ``out`` when given.
    """
    import ray.tune as tune

    from blast_ray.runtime import ensure_ray

    config_path = Path(config_path)
    overrides = list(overrides or [])
    base = load_config(config_path, overrides=overrides)
    if store:
        base.store = store
    space = load_space(space_path)
    space.check_against(base.to_dict(), lambda values: config_with(base, values))
    base = config_with(base, space.fixed)
    art_store = ArtifactStore(base.store)
    if art_store.is_s3:
        raise ConfigError(f"store {base.store!r}: `blast tune` needs a local store for now (Tune experiment "
                          "and trial checkpoints are written with local paths); tune into a local folder")
    base.store = art_store.uri()  # absolute: trials run in other working directories
    seed = options.seed if options.seed is not None else base.train.seed
    metric = metric_key(base)
    points = start_points(space, base, options.start_values, options.also_from)
    name = options.name or experiment_name(space, base, options)
    storage_path = art_store.path(*layout.tune_parts(base.dataset.name))
    exp_path = os.path.join(storage_path, name)
    t0 = time.time()

    log.info("tune %s on %s: %d trials x <= %d epochs, ASHA (grace %d, rf %s), seed %d -> %s", space.name,
             base.dataset.name, options.trials, options.max_epochs, options.grace_epochs, options.reduction_factor,
             seed, exp_path)
    ray = ensure_ray()
    _check_free_cpus(space, base, options, float(ray.cluster_resources().get("CPU", 0)))
    logging.getLogger("tensorboardX").setLevel(logging.ERROR)  # one warning per "@" metric name otherwise
    setup = TrialSetup(base=base, max_epochs=options.max_epochs, experiment=name,
                       lock_path=art_store.path(*layout.tune_parts(base.dataset.name, ".upstream.lock")), metric=metric)
    trainable = tune.with_resources(tune.with_parameters(_trial, setup=setup), {"cpu": options.cpus_per_trial})
    restorable = tune.Tuner.can_restore(exp_path)
    if options.resume:
        if not restorable:
            raise ConfigError(f"--resume: no Tune experiment to restore at {exp_path}; run without --resume "
                              "(or pass the --name of an existing experiment)")
        log.info("restoring Tune experiment %s", exp_path)
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_errored=True)
    else:
        if restorable:
            raise ConfigError(f"Tune experiment {name} already exists at {exp_path}; pass --resume to continue it "
                              "or --name NEW for a new one")
        outputs = upstream_outputs(base, run_id=f"tune-{name}-upstream", lock_path=setup.lock_path)
        log.info("upstream outputs: %s", {s: o.fingerprint for s, o in outputs.items()})
        tuner = _build_tuner(trainable, space, options, seed, storage_path, name, metric, points)
    grid = tuner.fit()
    rows = _trial_rows(grid, metric)
    scored = [r for r in rows if r[metric] is not None]
    if not scored:
        errs = "; ".join(r["error"] for r in rows if r["error"])[:500]
        raise RuntimeError(f"tune {name}: no trial reported {metric} ({errs or 'no trials ran'}); see {exp_path}")
    best_row = max(scored, key=lambda r: r[metric])
    best_values = {k: best_row["values"][k] for k in space.keys if k in best_row["values"]}
    best_metric, best_epoch, best_trial = best_row[metric], best_row["best_epoch"], best_row["trial_id"]
    how = f"trial {best_trial}"
    reranked, rerank_chosen = [], None
    if options.rerank >= 2:
        from blast_ray.tune import rerank as rr

        cands = rr.candidates(rows, metric, options.rerank,
                              rr.guaranteed_points(space, base, options.start_values, options.also_from))
        scored_cands, rerank_chosen = rr.rerank_full_length(base, cands, metric, f"tune-{name}-rerank")
        reranked = [c.as_dict() for c in scored_cands]
        pick = scored_cands[rerank_chosen]
        best_values = {k: pick.values[k] for k in space.keys if k in pick.values}
        best_metric, best_epoch, best_trial = pick.full_metric, pick.best_epoch, pick.trial_id
        how = (f"re-rank {rerank_chosen + 1} of {len(scored_cands)} at the config's {base.train.epochs} epochs"
               f" ({f'trial {pick.trial_id}' if pick.trial_id else 'a simpler-model point no trial ran'})")
    chosen = config_with(base, best_values)
    kept = kept_components(chosen)
    header = (f"tuned by `blast tune` run {name} ({art_store.uri(*layout.tune_parts(base.dataset.name, name))}):\n"
              f"space {space.source}, {len(rows)} trials x <= {options.max_epochs} epochs, ASHA, seed {seed}"
              f"{f', top {options.rerank} re-ranked at full length' if reranked else ''};\n"
              f"chosen on VALIDATION: {metric} = {best_metric:.4f} ({how}, epoch "
              f"{best_epoch}); keeps: {', '.join(k for k, v in kept.items() if v) or 'none (LightGCN + BPR)'}")
    all_values = {**space.fixed, **best_values}
    best_yaml = best_config_yaml(config_path, overrides, all_values, header, out_dir=Path(exp_path))
    artifacts.write_best_config(art_store, base.dataset.name, name, best_yaml)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(best_config_yaml(config_path, overrides, all_values, header, out_dir=out.parent))
    outcome = TuneOutcome(experiment=name, experiment_path=exp_path, restored=options.resume, n_trials=len(rows), metric=metric,
                          best_values=best_values, best_metric=best_metric, best_epoch=best_epoch,
                          best_yaml=best_yaml, kept=kept, trials=rows, rerank=reranked, rerank_chosen=rerank_chosen)
    if options.final:
        outcome.final_metrics, outcome.final_run_id = _final_run(chosen, name)
    summary = {
        "experiment": name, "path": exp_path, "space": space.as_dict(), "dataset": base.dataset.name,
        "metric": metric, "mode": "max", "trials_budget": options.trials, "max_epochs": options.max_epochs,
        "scheduler": {"name": "ASHA", "time_attr": "training_iteration (epochs)", "max_t": options.max_epochs,
                      "grace_period": options.grace_epochs, "reduction_factor": options.reduction_factor},
        "search": {"name": "random (BasicVariantGenerator)", "seed": seed, "fallback_first": bool(space.fallback),
                   "start_values": dict(options.start_values), "also_from": [dict(v) for v in options.also_from],
                   "points_to_evaluate": points},
        "rerank": {"top": options.rerank, "epochs": base.train.epochs, "candidates": reranked,
                   "chosen": rerank_chosen} if reranked else None,
        "restored": options.resume, "seconds": round(time.time() - t0, 1),
        "best": {"values": best_values, metric: best_metric, "trial_id": best_trial, "best_epoch": best_epoch,
                 "kept": kept},
        "trials": rows, "final": {"run_id": outcome.final_run_id, "metrics": outcome.final_metrics},
    }
    artifacts.write_summary(art_store, base.dataset.name, name, summary)
    return outcome


def _final_run(chosen: PipelineConfig, name: str) -> tuple[dict[str, Any], str]:
    """One pipeline run of the chosen configuration up to evaluate: the only test metrics of a tune."""
    from blast_ray.pipeline import run_pipeline

    res = run_pipeline(chosen, stages=(*upstream_stages(chosen), "train", "evaluate"), run_id=f"tune-{name}-final")
    if not res.ok:
        raise RuntimeError(f"tune {name}: the final run of the chosen configuration failed: {res.error}")
    return dict(res.metrics()), res.run_id


def format_outcome(o: TuneOutcome) -> str:
    """The console summary: best values, what the configuration keeps, the final test metrics."""
    lines = [f"tune {o.experiment}: {o.n_trials} trials{' (restored)' if o.restored else ''} -> {o.experiment_path}"]
    for i, c in enumerate(o.rerank):
        capped = "-" if c["tune_metric"] is None else f"{c['tune_metric']:.4f}"
        lines.append(f"  re-rank {i + 1}: {o.metric} {capped} within the trial's epochs, {c['full_metric']:.4f} at "
                     f"full length{'  <- chosen' if i == o.rerank_chosen else ''}")
    lines.append(f"best {o.metric} = {o.best_metric:.4f} (epoch {o.best_epoch}"
                 f"{', full length' if o.rerank else ''}); chosen values:")
    lines += [f"  {k}: {v}" for k, v in o.best_values.items()]
    errored = [t["trial_id"] for t in o.trials if t["status"] == "error"]
    if errored:
        lines.append(f"WARNING: {len(errored)} trial(s) failed ({', '.join(errored)}): see their error.txt; "
                     "--resume re-runs them")
    lines.append("keeps: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in o.kept.items()))
    if o.final_metrics:
        test = "test." + o.metric.split(".", 1)[1]
        keys = [k for k in dict.fromkeys((o.metric, test, "test.recall@20", "test.ndcg@20")) if k in o.final_metrics]
        lines.append(f"final run {o.final_run_id}: " + ", ".join(f"{k} {o.final_metrics[k]:.4f}" for k in keys))
    else:
        lines.append("final run skipped (--no-final): no test metric computed")
    lines.append("--- best configuration ---")
    lines.append(o.best_yaml.rstrip())
    return "\n".join(lines)
