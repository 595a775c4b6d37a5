"""kNN graphs (method doc section 2): blocked cosine top-k, normalization, modality combination."""

from blast_ray.graphs.knn import combine_graphs, knn_graph, knn_topk, l2_normalize, sym_normalize

__all__ = ["knn_graph", "knn_topk", "l2_normalize", "sym_normalize", "combine_graphs"]
