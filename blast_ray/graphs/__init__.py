"""kNN graphs (method doc section 2): blocked cosine top-k, normalization, modality combination.

Public surface: pure ``knn_graph`` / ``knn_topk`` / ``sym_normalize`` / ``combine_graphs``,
Ray-distributed ``knn_topk_ray`` / ``knn_graph_ray``, the stage ``run`` and the loaders
``load_item_knn`` / ``load_graph`` / ``has_user_graph`` (``blast_ray.graphs.artifacts``).
"""

from blast_ray.graphs.knn import combine_graphs, knn_graph, knn_topk, l2_normalize, sym_normalize

__all__ = [
    "knn_graph", "knn_topk", "l2_normalize", "sym_normalize", "combine_graphs",
    "knn_topk_ray", "knn_graph_ray", "run", "load_item_knn", "load_graph", "has_user_graph",
]


def __getattr__(name):  # Ray / store code is imported lazily
    if name in ("knn_topk_ray", "knn_graph_ray"):
        from blast_ray.graphs import distributed

        return getattr(distributed, name)
    if name in ("load_item_knn", "load_graph", "has_user_graph"):
        from blast_ray.graphs import artifacts

        return getattr(artifacts, name)
    if name == "run":
        from blast_ray.graphs import stage

        return stage.run
    raise AttributeError(name)
