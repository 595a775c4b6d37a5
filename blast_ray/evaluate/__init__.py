"""Full-ranking evaluation (Recall/NDCG/Precision/MAP@K) and the evaluate stage."""

from blast_ray.evaluate.metrics import evaluate_ranking, metrics_from_hits, topk_items

__all__ = ["evaluate_ranking", "metrics_from_hits", "topk_items"]
