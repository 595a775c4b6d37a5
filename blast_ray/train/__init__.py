"""Training: one trainer for all models (single process or Ray Train), negatives, checkpoints."""

from blast_ray.train.negatives import sample_negatives
from blast_ray.train.trainer import TrainInputs, final_outputs, fit

__all__ = ["TrainInputs", "final_outputs", "fit", "sample_negatives"]
