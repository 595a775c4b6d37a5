"""Hyperparameter tuning on the validation split with Ray Tune (``blast tune``).

``space``: search-space files (``configs/spaces/<model>.yaml``); ``runner``: the Tuner, the trial,
the best configuration. See docs/stages/tune.md.
"""

from blast_ray.tune.space import SearchSpace, SpaceError, load_space

__all__ = ["SearchSpace", "SpaceError", "load_space"]
