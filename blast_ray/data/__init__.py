"""The interaction matrices every training/evaluation step works on (pure: no store, no engine).

Loading them from a committed ETL output is the ETL artifacts module's job:
``blast_ray.etl.artifacts.load_interactions``.
"""

from blast_ray.data.interactions import SPLITS, InteractionData

__all__ = ["InteractionData", "SPLITS"]
