"""Models (one per module) sharing one trainer: bpr, lightgcn, freedom, blast."""

from blast_ray.models.blast import BLAST
from blast_ray.models.bpr import BPRMF, GraphInputs
from blast_ray.models.freedom import FREEDOM
from blast_ray.models.lightgcn import LightGCN

MODELS = {"bpr": BPRMF, "lightgcn": LightGCN, "freedom": FREEDOM, "blast": BLAST}

__all__ = ["BLAST", "BPRMF", "FREEDOM", "GraphInputs", "LightGCN", "MODELS"]
