"""Full-length re-rank of a tune's best trials, chosen on VALIDATION (``blast tune --rerank N``).

Why: a trial trains at most ``--max-epochs`` epochs and ASHA stops slow starters early, while
models converge at different speeds (on Scientific FREEDOM peaks at 110-180 epochs, BLAST at
50-80). Ranked on the capped metric alone, a tune picked configurations that lose at full length,
and cut FREEDOM's point inside BLAST's space (0.0862 capped, 0.2818 at full length), which the
fallback guarantee needs. The re-rank trains each candidate for the config's ``train.epochs``
(early stopping on validation, ``train.patience``) and keeps the best on validation.

Candidates (:func:`candidates`): the tune's top ``n`` trials by their capped validation metric,
then the ``guaranteed`` points (the simpler models inside the space: the staged search's point 1
and each ``--also-from`` point, :func:`guaranteed_points`), each once. A full-length score
(:func:`full_length_metric`) trains in this process through the same adapter as a trial
(``runner.train_with_epoch_reports``): only validation metrics are computed, never test. Scores are
kept in the store (``artifacts.write_rerank_score``, keyed by the whole config), so a resumed tune
or a re-run benchmark does not train a candidate twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from blast_ray.config import PipelineConfig
from blast_ray.store import ArtifactStore
from blast_ray.store.hashing import stable_hash
from blast_ray.tune import artifacts
from blast_ray.tune.runner import config_with, embedded_point, start_points, train_with_epoch_reports, upstream_outputs
from blast_ray.tune.space import SearchSpace

log = logging.getLogger("blast_ray.tune")


@dataclass(frozen=True)
class Candidate:
    """One configuration of the re-rank: its tuned ``values`` (dotted keys), the trial it came from
    (None: a guaranteed point no trial ran) with that trial's capped validation metric, and, once
    scored, its full-length validation metric and the 1-based epoch of that value."""

    values: dict[str, Any]
    trial_id: str | None = None
    tune_metric: float | None = None
    full_metric: float | None = None
    best_epoch: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"values": self.values, "trial_id": self.trial_id, "tune_metric": self.tune_metric,
                "full_metric": self.full_metric, "best_epoch": self.best_epoch}


def _tuned(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if not k.startswith("_")}


def candidates(rows: Sequence[dict[str, Any]], metric: str, n: int,
               guaranteed: Sequence[dict[str, Any]] = ()) -> list[Candidate]:
    """The re-rank's candidates from a tune's trial ``rows`` (``runner._trial_rows``): the top ``n``
    distinct value sets by ``metric`` (trials without it left out; two trials of the same values
    count once), then each ``guaranteed`` point not among them. A guaranteed point takes the values of the trial that ran it (the keys it left open
    sampled there), else its own.

    >>> rows = [{"trial_id": "a", "values": {"x": 1}, "m": 0.2}, {"trial_id": "b", "values": {"x": 2}, "m": 0.3},
    ...         {"trial_id": "c", "values": {"x": 3}, "m": None}, {"trial_id": "d", "values": {"x": 2}, "m": 0.3}]
    >>> [(c.trial_id, c.values) for c in candidates(rows, "m", 1, [{"x": 1}, {"x": 4}])]
    [('b', {'x': 2}), ('a', {'x': 1}), (None, {'x': 4})]
    >>> [c.trial_id for c in candidates(rows, "m", 2)]
    ['b', 'a']
    """
    out: list[Candidate] = []

    def add(row: dict[str, Any] | None, values: dict[str, Any]) -> None:
        if all(c.values != values for c in out):
            metric_value = row.get(metric) if row else None
            out.append(Candidate(values, str(row["trial_id"]) if row else None,
                                 None if metric_value is None else float(metric_value)))

    ranked = sorted((r for r in rows if r.get(metric) is not None), key=lambda r: -r[metric])
    for row in ranked:
        if len(out) >= n:
            break
        add(row, _tuned(row["values"]))
    for point in guaranteed:
        row = next((r for r in rows if all(r["values"].get(k) == v for k, v in point.items())), None)
        add(row, _tuned(row["values"] if row else point))
    return out


def guaranteed_points(space: SearchSpace, base: PipelineConfig, start_values: dict[str, Any],
                      also_from: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """The points of ``space`` that are its simpler models at their chosen values: the staged
    search's point 1 (``start_values``) and one :func:`runner.embedded_point` per ``also_from``
    entry. ``base``: the tune's base config (the space's fixed values applied)."""
    points = start_points(space, base, start_values)[:1] if start_values else []
    return points + [embedded_point(space, dict(v)) for v in also_from]


def full_length_config(base: PipelineConfig, values: dict[str, Any]) -> PipelineConfig:
    """``base`` + ``values`` as the re-rank trains it: the config's epochs and patience, one process,
    no bar, never warm-started."""
    cfg = config_with(base, values)
    cfg.train.num_workers = 1
    cfg.train.progress = False
    cfg.train.warm_start_from = None
    return cfg


def full_length_metric(cfg: PipelineConfig, metric: str, run_id: str) -> tuple[float, int]:
    """(best ``metric`` over the epochs, its 1-based epoch) of one training of ``cfg`` (its upstream
    outputs through ``run_pipeline``, cached by fingerprint): validation only, never test. Read from
    the store when this very config was scored before."""
    store = ArtifactStore(cfg.store)
    key = stable_hash({"config": cfg.to_dict(), "metric": metric})
    cached = artifacts.load_rerank_score(store, cfg.dataset.name, key)
    if cached is not None:
        return float(cached["metric"]), int(cached["best_epoch"])
    outputs = upstream_outputs(cfg, run_id=run_id)
    seen: list[float] = []

    def on_epoch(row: dict[str, Any], _state: Callable[[], bytes]) -> None:
        if metric in row:
            seen.append(float(row[metric]))

    train_with_epoch_reports(cfg, outputs, on_epoch)
    if not seen:
        raise RuntimeError(f"re-rank {run_id}: the training reported no {metric}")
    best = max(range(len(seen)), key=seen.__getitem__)  # ties: the earlier epoch, as the trainer selects
    artifacts.write_rerank_score(store, cfg.dataset.name, key, {"metric": seen[best], "best_epoch": best + 1,
                                                                "values": cfg.to_dict()})
    return seen[best], best + 1


def rerank(cands: Sequence[Candidate], score: Callable[[Candidate, int], tuple[float, int]]) -> tuple[list[Candidate], int]:
    """Score every candidate with ``score(candidate, i)`` -> (metric, best epoch) and return them
    scored with the index of the best (ties: the earlier, i.e. the better tune rank)."""
    if not cands:
        raise ValueError("re-rank: no candidate (no trial reported the metric)")
    scored = []
    for i, c in enumerate(cands, 1):
        value, epoch = score(c, i)
        scored.append(replace(c, full_metric=float(value), best_epoch=int(epoch)))
        log.info("re-rank %d/%d: %s within the tune's epochs, %.4f at full length (epoch %d)", i, len(cands),
                 "-" if c.tune_metric is None else f"{c.tune_metric:.4f}", value, epoch)
    best = max(range(len(scored)), key=lambda i: scored[i].full_metric)
    return scored, best


def rerank_full_length(base: PipelineConfig, cands: Sequence[Candidate], metric: str,
                       run_prefix: str) -> tuple[list[Candidate], int]:
    """:func:`rerank` with :func:`full_length_metric` of ``base`` + each candidate's values."""
    return rerank(cands, lambda c, i: full_length_metric(full_length_config(base, c.values), metric,
                                                         f"{run_prefix}{i}"))
