"""The stage DAG and its driver: resolve fingerprints, skip committed stages, run the rest.

Each stage is a function ``run(ctx: StageContext, out: StageOutput) -> dict`` living in its own
sub-package (``blast_ray.<stage>.stage``). The dict may hold ``row_counts``, ``timings``, ``extra``
and ``metrics``; the driver commits the manifest with them. A stage's fingerprint covers its own
config sections and the fingerprints of the upstream outputs it consumed, so changing a config key
re-runs exactly the stages downstream of it.
"""

from __future__ import annotations

import importlib
import logging
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from blast_ray.config import STAGES, PipelineConfig
from blast_ray.errors import one_line
from blast_ray.signals import interrupt_behind
from blast_ray.store import ArtifactStore, StageOutput, layout
from blast_ray.store.names import validate_name

log = logging.getLogger("blast_ray.pipeline")


@dataclass(frozen=True)
class StageSpec:
    name: str
    entrypoint: str  # "module:function"
    depends: tuple[str, ...]  # upstream stages whose outputs it reads when present
    sections: tuple[str, ...]  # config sections that shape its output
    cached: bool = True  # False: runs every time (the per-run report)
    # "module:function" (cfg) -> {name: content hash} of the inputs that no upstream stage
    # produces (the ETL's raw dumps): added to the stage's fingerprint inputs, so changed raw
    # files re-run it. Imported only when the stage is resolved.
    raw_inputs: str | None = None


STAGE_SPECS: dict[str, StageSpec] = {
    s.name: s
    for s in (
        StageSpec("etl", "blast_ray.etl.stage:run", (), ("dataset", "etl"), raw_inputs="blast_ray.etl.stage:raw_inputs"),
        StageSpec("profiles", "blast_ray.profiles.stage:run", ("etl",), ("profiles",)),
        StageSpec("features", "blast_ray.features.stage:run", ("etl", "profiles"), ("features",)),
        StageSpec("graphs", "blast_ray.graphs.stage:run", ("etl", "features"), ("graphs",)),
        StageSpec("augment", "blast_ray.augment.stage:run", ("etl", "graphs"), ("augment",)),
        StageSpec("train", "blast_ray.train.stage:run", ("etl", "features", "graphs", "augment"),
                  ("train", "evaluate.ks", "evaluate.batch_users", "evaluate.select_metric")),  # validation during training
        StageSpec("evaluate", "blast_ray.evaluate.stage:run", ("etl", "features", "graphs", "train"), ("evaluate",)),
        StageSpec("recommend", "blast_ray.recommend.stage:run", ("etl", "train"), ("recommend",)),
        StageSpec("report", "blast_ray.report.stage:run", STAGES[:-1], (), cached=False),
    )
}
assert tuple(STAGE_SPECS) == STAGES


@dataclass
class StageContext:
    """What a stage sees: the config, the store, the run, and the committed upstream outputs."""

    cfg: PipelineConfig
    store: ArtifactStore
    run_id: str
    outputs: dict[str, StageOutput] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-stage manifests of this run

    @property
    def dataset(self) -> str:
        return self.cfg.dataset.name

    def run_parts(self, *sub: str) -> tuple[str, ...]:
        return layout.run_parts(self.dataset, self.run_id, *sub)

    def require(self, stage: str) -> StageOutput:
        """The committed output of an upstream stage, or a clear error naming how to get it."""
        if stage not in self.outputs:
            raise RuntimeError(
                f"this stage needs the output of '{stage}', which is not in this run and has no committed "
                f"output for this config; add it to --stages (or run `blast {stage} --config ...` first)"
            )
        return self.outputs[stage]


def ancestors(stage: str) -> set[str]:
    """Every stage ``stage`` reads, directly or through its inputs."""
    out: set[str] = set()
    todo = list(STAGE_SPECS[stage].depends)
    while todo:
        s = todo.pop()
        if s not in out:
            out.add(s)
            todo.extend(STAGE_SPECS[s].depends)
    return out


def _import_entry(entrypoint: str) -> Callable[..., Any]:
    """The function named by ``"module:function"``."""
    module_name, fn_name = entrypoint.split(":")
    return getattr(importlib.import_module(module_name), fn_name)


def load_stage_fn(spec: StageSpec) -> Callable[[StageContext, StageOutput], dict[str, Any]]:
    return _import_entry(spec.entrypoint)


# Keys that change how a stage runs but never what it writes: left out of fingerprints, so
# turning a progress bar on or allowing more retries does not recompute a committed output.
NOT_FINGERPRINTED: dict[str, tuple[str, ...]] = {"train": ("progress", "max_failures", "ray_train_single_worker")}


def stage_config(cfg: PipelineConfig, spec: StageSpec) -> dict[str, Any]:
    """The config a stage's output depends on: whole sections, or ``section.key`` for one key."""
    d = cfg.to_dict()
    out: dict[str, Any] = {}
    for s in spec.sections:
        if "." in s:
            sec, key = s.split(".", 1)
            out.setdefault(sec, {})[key] = d[sec][key]
        else:
            out[s] = {k: v for k, v in d[s].items() if k not in NOT_FINGERPRINTED.get(s, ())}
    return out


KEY_COUNTS = ("interactions", "users", "items", "profiles", "augmented_pairs", "epochs", "recommendations")


def _key_counts(manifest: dict[str, Any], n: int = 4) -> str:
    """Up to ``n`` row counts of a manifest (the KEY_COUNTS first), for the one console line per
    finished stage; the full counts are in the manifest and run.json."""
    counts = manifest.get("row_counts") or {}
    keys = [k for k in KEY_COUNTS if k in counts] + [k for k in counts if k not in KEY_COUNTS]
    return ", ".join(f"{k} {counts[k]:,}" for k in keys[:n])


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


@dataclass
class PipelineResult:
    run_id: str
    status: dict[str, str]  # stage -> ran | skipped | failed | not-selected
    manifests: dict[str, dict[str, Any]]
    failed_stage: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed_stage is None

    def metrics(self) -> dict[str, Any]:
        for stage in ("evaluate", "train"):
            m = self.manifests.get(stage, {}).get("extra", {}).get("metrics")
            if m:
                return m
        return {}


def resolve_output(ctx: StageContext, spec: StageSpec) -> StageOutput:
    inputs = {d: ctx.outputs[d].fingerprint for d in spec.depends if d in ctx.outputs}
    config = stage_config(ctx.cfg, spec)
    if spec.raw_inputs:  # inputs no upstream stage produces (raw files): their content hash is the input
        inputs.update(_import_entry(spec.raw_inputs)(ctx.cfg))
    if not spec.cached:
        config = {"run_id": ctx.run_id}
    return StageOutput.open(ctx.store, ctx.dataset, spec.name, config=config, inputs=inputs)


def selection(cfg: PipelineConfig, stages: tuple[str, ...] | None, from_stage: str | None,
              force: tuple[str, ...]) -> tuple[tuple[str, ...], set[str], int]:
    """(the stages considered, the stages recomputed even when committed, the index of
    ``from_stage``) of a run; ValueError for an unknown stage name. Shared with ``dry_run``."""
    stages = tuple(stages or cfg.stages)
    for s in stages:
        if s not in STAGE_SPECS:
            raise ValueError(f"unknown stage {s!r}; stages are {', '.join(STAGES)}")
    if from_stage is not None and from_stage not in STAGES:
        raise ValueError(f"unknown --from-stage {from_stage!r}; stages are {', '.join(STAGES)}")
    from_idx = STAGES.index(from_stage) if from_stage else 0
    forced = set(force) | (set(STAGES[from_idx:]) if from_stage else set())
    return stages, forced, from_idx


def _drop_uncommitted(store: ArtifactStore, out: StageOutput) -> None:
    """Delete a failed stage's uncommitted prefix (no empty or half-written folder stays behind;
    a committed prefix is never touched)."""
    try:
        if not out.done:
            store.delete_dir(*out.parts)
    except Exception as e:  # noqa: BLE001 - the next run wipes it anyway
        log.debug("could not delete the uncommitted %s (%s)", out.uri(), e)


def run_pipeline(
    cfg: PipelineConfig,
    stages: tuple[str, ...] | None = None,
    from_stage: str | None = None,
    force: tuple[str, ...] = (),
    run_id: str | None = None,
    store: ArtifactStore | None = None,
    use_committed_upstream: bool = False,
) -> PipelineResult:
    """Run the selected stages in DAG order, skipping those whose manifest matches.

    ``stages``: which stages to consider (default: ``cfg.stages``). ``from_stage``: stages before it
    must already be committed (they are resolved, never re-run) and it and the stages after it are
    recomputed. ``force``: stages to recompute even when committed. ``use_committed_upstream``
    (what ``blast <stage>`` uses): stages outside ``stages`` that a selected stage reads are resolved
    from the store when committed for this config (never run); without it a run sees only the
    outputs of its selected stages. Returns a PipelineResult; never raises for a stage failure
    (see ``failed_stage``).
    """
    stages, forced, from_idx = selection(cfg, stages, from_stage, force)
    store = store or ArtifactStore(cfg.store)
    # an outside run id (--run-id) becomes a store path part: same rule as dataset names
    ctx = StageContext(cfg=cfg, store=store, run_id=validate_name(run_id, "--run-id") if run_id else new_run_id())
    status: dict[str, str] = {}

    from blast_ray.runs import RunRecord

    record = RunRecord.start(store, cfg, ctx.run_id, stages)
    for idx, name in enumerate(STAGES):
        spec = STAGE_SPECS[name]
        if name not in stages:
            status[name] = "not-selected"
            if use_committed_upstream and any(name in ancestors(s) for s in stages):
                try:
                    out = resolve_output(ctx, spec)
                except Exception as e:  # noqa: BLE001 - the stage that needs it says so via require()
                    log.info("stage %-9s not selected and not resolvable (%s)", name, e)
                    continue
                if out.done:
                    manifest = out.manifest
                    damaged = out.verify(manifest)
                    if damaged:  # not selected, so not recomputed here: one line naming the file
                        status[name] = "failed"
                        err = (f"stage '{name}' (not selected; its committed output is read by this run): {damaged[0]}; "
                               f"add '{name}' to --stages to recompute it")
                        record.finish(status, failed=name, error=err)
                        return PipelineResult(ctx.run_id, status, ctx.results, name, err)
                    log.info("stage %-9s not selected: using its committed output %s", name, out.fingerprint)
                    ctx.outputs[name] = out
                    ctx.results[name] = manifest
            continue
        try:  # resolving hashes raw inputs (etl): a missing file must fail the run naming the stage
            out = resolve_output(ctx, spec)
        except Exception as e:  # noqa: BLE001
            status[name] = "failed"
            err = f"stage '{name}' failed: {one_line(e)}"
            log.debug("stage %s failed:\n%s", name, traceback.format_exc())
            record.finish(status, failed=name, error=err)
            return PipelineResult(ctx.run_id, status, ctx.results, name, err)
        must_exist = idx < from_idx
        damaged = out.verify() if out.done and spec.cached and name not in forced else []
        if damaged:  # a committed file changed since its commit (content hash): never skip to it
            log.warning("stage %-9s committed output %s is damaged, recomputing it: %s%s", name, out.fingerprint,
                        damaged[0], f" (and {len(damaged) - 1} more file(s))" if len(damaged) > 1 else "")
            if must_exist:
                msg = f"--from-stage {from_stage}: upstream stage '{name}': {damaged[0]}; rerun without --from-stage"
                status[name] = "failed"
                record.finish(status, failed=name, error=msg)
                return PipelineResult(ctx.run_id, status, ctx.results, name, msg)
        if out.done and spec.cached and name not in forced and not damaged:
            log.info("stage %-9s skipped: committed output %s matches its inputs", name, out.fingerprint)
            ctx.outputs[name] = out
            ctx.results[name] = out.manifest
            status[name] = "skipped"
            record.stage(name, "skipped", ctx.results[name])
            continue
        if must_exist:
            msg = f"--from-stage {from_stage}: upstream stage '{name}' has no committed output for this config"
            status[name] = "failed"
            record.finish(status, failed=name, error=msg)
            return PipelineResult(ctx.run_id, status, ctx.results, name, msg)
        if out.done:  # forced or damaged: drop the committed output first
            store.delete_dir(*out.parts)
        out.begin()
        record.begin_stage(name)
        log.debug("stage %-9s running -> %s", name, out.uri())
        t0 = time.time()
        try:
            result = load_stage_fn(spec)(ctx, out) or {}  # an import error fails the stage, named
            timings = dict(result.get("timings", {}))
            timings.setdefault("total_s", round(time.time() - t0, 3))
            extra = dict(result.get("extra", {}))
            if "metrics" in result:
                extra["metrics"] = result["metrics"]
            manifest = out.commit(row_counts=result.get("row_counts"), timings=timings, extra=extra)
        except BaseException as e:  # noqa: BLE001 - reported with the stage name, run marked failed
            # the whole trace: run.log and the console with -v; people get one line (blast_ray.errors)
            log.debug("stage %s failed:\n%s", name, traceback.format_exc())
            _drop_uncommitted(store, out)
            if not isinstance(e, Exception):  # a signal (entry.main_wrapper) or SystemExit: recorded there
                raise
            interrupt = interrupt_behind(e)
            if interrupt is not None:  # a signal a library turned into an error or swallowed (blast_ray.signals)
                raise interrupt from None
            status[name] = "failed"
            err = f"stage '{name}' failed: {one_line(e)}"
            try:
                record.finish(status, failed=name, error=err)
            except Exception as rec_e:  # noqa: BLE001 - the store is gone (often why the stage failed): say the stage's error
                log.debug("run %s: the failed run's record was not written (%s)", ctx.run_id, one_line(rec_e))
            return PipelineResult(ctx.run_id, status, ctx.results, name, err)
        ctx.outputs[name] = out
        ctx.results[name] = manifest
        status[name] = "ran"
        record.stage(name, "ran", manifest)
        log.info("stage %-9s done in %6.1fs  %s", name, time.time() - t0, _key_counts(manifest))
    record.finish(status)
    return PipelineResult(ctx.run_id, status, ctx.results)
