"""Ranking: top-K metrics and the one scoring function with the masking rule (a leaf package:
numpy, scipy, torch only). Used by train (validation), evaluate (metrics, baselines) and recommend."""

from blast_ray.ranking.metrics import (METRICS, add_sums, eval_users, evaluate_ranking, hit_matrix, metrics_from_hits,
                                       metrics_from_sums, ranking_sums, topk_items, topk_items_blocked, users_per_block)
from blast_ray.ranking.scoring import SelectMetric, known_items, score_split, score_splits

__all__ = ["METRICS", "SelectMetric", "add_sums", "eval_users", "evaluate_ranking", "hit_matrix", "known_items",
           "metrics_from_hits", "metrics_from_sums", "ranking_sums", "score_split", "score_splits", "topk_items",
           "topk_items_blocked", "users_per_block"]
