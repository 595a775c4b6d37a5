"""The evaluate stage: full-ranking metrics of the trained representations and the baselines.
The metrics and the masking rule themselves live in :mod:`blast_ray.ranking`."""

from blast_ray.ranking import evaluate_ranking, metrics_from_hits, topk_items

__all__ = ["evaluate_ranking", "metrics_from_hits", "topk_items"]
