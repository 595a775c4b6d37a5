"""Typed, validated configuration: one pydantic model per pipeline stage.

A pipeline config is a YAML file (one per dataset, see ``configs/``) whose top-level keys are the
sections of ``PipelineConfig``. Every key is checked whenever a config object is built or a key is
assigned: an unknown key, a wrong type or an out-of-range value fails with a ``ConfigError`` that
names the dotted key and says how to fix it.

- ``schema``: the models (``PipelineConfig`` and one section per stage) and their rules.
- ``loader``: YAML files, ``--set`` overrides, path expansion (``load_config``).
- ``errors``: ``ConfigError`` and the one-line translation of pydantic errors.
Stable hashing of configs lives in ``blast_ray.store.hashing``.
"""

from blast_ray.config.errors import ConfigError
from blast_ray.config.loader import config_from_dict, load_config, shared_data_dir
from blast_ray.config.schema import (
    BASELINE_MODELS,
    INPUT_FORMATS,
    RANKING_METRICS,
    STAGES,
    AugmentConfig,
    ConfigModel,
    DatasetConfig,
    EtlConfig,
    EvaluateConfig,
    FeaturesConfig,
    GraphsConfig,
    PipelineConfig,
    ProfilesConfig,
    RecommendConfig,
    TrainConfig,
)

__all__ = [
    "BASELINE_MODELS",
    "INPUT_FORMATS",
    "RANKING_METRICS",
    "STAGES",
    "AugmentConfig",
    "ConfigError",
    "ConfigModel",
    "DatasetConfig",
    "EtlConfig",
    "EvaluateConfig",
    "FeaturesConfig",
    "GraphsConfig",
    "PipelineConfig",
    "ProfilesConfig",
    "RecommendConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "shared_data_dir",
]
