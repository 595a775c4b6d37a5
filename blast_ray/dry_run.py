"""``blast run --dry-run``: which stages a run would compute, skip or take from the store, and why.

Uses the driver's own fingerprint resolution (``blast_ray.pipeline.resolve_output``) so the plan
matches what ``run_pipeline`` would do with the same arguments; it writes nothing to the store and
runs no stage (resolving the ETL's fingerprint hashes the raw input files, as a run would).
"""

from __future__ import annotations

from dataclasses import dataclass

from blast_ray.config import STAGES, PipelineConfig
from blast_ray.store import ArtifactStore


@dataclass(frozen=True)
class PlannedStage:
    """One stage of the plan. ``action``: run | skip | use-committed | missing | not-selected | error."""

    stage: str
    action: str
    reason: str
    fingerprint: str | None = None


def plan_run(
    cfg: PipelineConfig,
    stages: tuple[str, ...] | None = None,
    from_stage: str | None = None,
    force: tuple[str, ...] = (),
    use_committed_upstream: bool = True,
    store: ArtifactStore | None = None,
) -> list[PlannedStage]:
    """The plan of ``run_pipeline(cfg, stages, from_stage, force, use_committed_upstream=...)``,
    one entry per stage in DAG order. Raises ValueError for an unknown stage name, as the run does."""
    from blast_ray.pipeline import STAGE_SPECS, StageContext, ancestors, resolve_output, selection

    stages, forced, from_idx = selection(cfg, stages, from_stage, force)
    store = store or ArtifactStore(cfg.store)
    ctx = StageContext(cfg=cfg, store=store, run_id="dry-run")
    plan: list[PlannedStage] = []
    for idx, name in enumerate(STAGES):
        spec = STAGE_SPECS[name]
        needed = use_committed_upstream and any(name in ancestors(s) for s in stages)
        if name not in stages and not needed:
            plan.append(PlannedStage(name, "not-selected", "not in the selected stages and no selected stage reads it"))
            continue
        try:
            out = resolve_output(ctx, spec)
        except Exception as e:  # noqa: BLE001 - the run would fail here too; say why
            plan.append(PlannedStage(name, "error", f"{type(e).__name__}: {e}".splitlines()[0]))
            continue
        # Downstream fingerprints need this one whether or not it is committed: a run computes it first.
        ctx.outputs[name] = out
        if name not in stages:
            if out.done:
                plan.append(PlannedStage(name, "use-committed", "not selected; a selected stage reads its committed output", out.fingerprint))
            else:
                plan.append(PlannedStage(name, "missing", "not selected and not committed for this config: the "
                                         "stages reading it would fail (add it to --stages)", out.fingerprint))
                del ctx.outputs[name]
            continue
        if not spec.cached:
            plan.append(PlannedStage(name, "run", "not cached: runs in every run"))
        elif out.done and name not in forced:
            plan.append(PlannedStage(name, "skip", "committed output matches its config and inputs", out.fingerprint))
        elif idx < from_idx:
            plan.append(PlannedStage(name, "missing", f"before --from-stage {from_stage} but not committed: the run would fail", out.fingerprint))
        elif name in forced:
            plan.append(PlannedStage(name, "run", "forced (--force / --from-stage)" + (": the committed output is replaced" if out.done else ""), out.fingerprint))
        else:
            plan.append(PlannedStage(name, "run", "no committed output for this config and these inputs", out.fingerprint))
    return plan


def format_plan(plan: list[PlannedStage]) -> str:
    """A table: stage, action, fingerprint, reason."""
    lines = [f"{'stage':<10} {'action':<14} {'fingerprint':<18} why"]
    for p in plan:
        lines.append(f"{p.stage:<10} {p.action:<14} {(p.fingerprint or '-'):<18} {p.reason}")
    return "\n".join(lines)


def committed_output(cfg: PipelineConfig, stage: str, store: ArtifactStore | None = None):
    """The committed StageOutput of ``stage`` for this config (its upstream resolved the same way a
    run resolves them), or None when it is not committed. Reads only manifests (and, for the ETL,
    hashes the raw inputs)."""
    from blast_ray.pipeline import STAGE_SPECS, StageContext, ancestors, resolve_output

    store = store or ArtifactStore(cfg.store)
    ctx = StageContext(cfg=cfg, store=store, run_id="lookup")
    wanted = ancestors(stage) | {stage}
    for name in STAGES:
        if name in wanted:
            out = resolve_output(ctx, STAGE_SPECS[name])
            if out.done:
                ctx.outputs[name] = out
    return ctx.outputs.get(stage)
