"""Readers of the ETL output contract shared by all downstream stages."""

from blast_ray.data.interactions import SPLITS, InteractionData, load_interactions

__all__ = ["InteractionData", "load_interactions", "SPLITS"]
