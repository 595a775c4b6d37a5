"""Text (and precomputed visual) features: encoders on a Ray Data actor pool, Parquet vectors.

Public surface: ``run`` (the stage), ``load_features``, ``TextEncoder``, ``resolve_text_encoder``.
"""

from blast_ray.features.encoders import TextEncoder, resolve_text_encoder

__all__ = ["run", "load_features", "TextEncoder", "resolve_text_encoder"]


def __getattr__(name):  # the stage pulls in Ray/pandas: import lazily
    if name in ("run", "load_features"):
        from blast_ray.features import stage

        return getattr(stage, name)
    raise AttributeError(name)
