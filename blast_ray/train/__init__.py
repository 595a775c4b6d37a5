"""Training: one trainer for all models (single process or Ray Train), negatives, checkpoints."""

from blast_ray.train.negatives import sample_negatives
from blast_ray.train.trainer import TrainInputs, final_outputs, fit
from blast_ray.train.warm_start import WarmStart, load_warm_start

__all__ = ["TrainInputs", "WarmStart", "final_outputs", "fit", "load_warm_start", "sample_negatives"]
