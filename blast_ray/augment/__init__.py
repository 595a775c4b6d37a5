"""False-negative-aware sampling and OT augmentation (method doc section 4).

Public surface: ``false_negative_candidates``, ``sparse_sinkhorn`` (single process),
``distributed_sinkhorn`` (Ray row blocks), ``top_q_cells``, ``SinkhornNotConverged``,
the stage ``run`` and the loader ``load_augmentation`` (``blast_ray.augment.artifacts``).
"""

from blast_ray.augment.false_negatives import false_negative_candidates, union_graphs
from blast_ray.augment.sinkhorn import SinkhornNotConverged, SinkhornResult, default_marginals, marginals, sparse_sinkhorn
from blast_ray.augment.topq import top_q_cells

__all__ = [
    "false_negative_candidates", "union_graphs", "sparse_sinkhorn", "distributed_sinkhorn", "SinkhornResult",
    "SinkhornNotConverged", "default_marginals", "marginals", "top_q_cells", "run", "load_augmentation", "Augmentation",
]


def __getattr__(name):  # Ray / store code is imported lazily
    if name == "distributed_sinkhorn":
        from blast_ray.augment.distributed import distributed_sinkhorn

        return distributed_sinkhorn
    if name in ("load_augmentation", "Augmentation"):
        from blast_ray.augment import artifacts

        return getattr(artifacts, name)
    if name == "run":
        from blast_ray.augment import stage

        return stage.run
    raise AttributeError(name)
