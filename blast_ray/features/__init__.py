"""Text and visual item features: encoders on Ray Data actor pools, Parquet vectors.

Public surface: ``run`` (the stage), ``load_features``, ``load_feature_masks`` (from
``blast_ray.features.artifacts``), ``TextEncoder``,
``resolve_text_encoder``, ``ImageEncoder`` (EfficientNet-Lite0, 1,280-d), ``preprocess_image``,
``resolve_image_source``, ``encode_images_on_ray``.
"""

from blast_ray.features.encoders import TextEncoder, resolve_text_encoder
from blast_ray.features.images import ImageEncoder, encode_images_on_ray, preprocess_image, resolve_image_source

__all__ = [
    "run", "load_features", "load_feature_masks", "TextEncoder", "resolve_text_encoder",
    "ImageEncoder", "preprocess_image", "resolve_image_source", "encode_images_on_ray",
]


def __getattr__(name):  # the stage pulls in Ray/pandas: import lazily
    if name in ("load_features", "load_feature_masks"):
        from blast_ray.features import artifacts

        return getattr(artifacts, name)
    if name == "run":
        from blast_ray.features import stage

        return getattr(stage, name)
    raise AttributeError(name)
