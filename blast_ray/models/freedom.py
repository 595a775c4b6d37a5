"""FREEDOM (Zhou & Shen 2023): frozen item-item graph from features + degree-sensitive edge
pruning of the user-item graph + auxiliary item-feature BPR terms. Same as BLAST without the
user-user branch and the user-profile term (``use_user_graph = False``)."""

from __future__ import annotations

from blast_ray.models.blast import BLAST


class FREEDOM(BLAST):
    use_user_graph = False
