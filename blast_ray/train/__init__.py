"""Training: inputs -> loop (TrainState) -> checkpoints -> Ray Train wrapper -> fit; negatives,
warm start, and the train stage's artifacts. Needs neither Ray nor Spark unless Ray Train runs it
(num_workers > 1 or train.ray_train_single_worker)."""

from blast_ray.train.fit import final_outputs, fit
from blast_ray.train.inputs import TrainInputs
from blast_ray.train.loop import EvalPlan, TrainState, epoch_cap
from blast_ray.train.negatives import sample_negatives
from blast_ray.train.warm_start import WarmStart, load_warm_start

__all__ = ["EvalPlan", "TrainInputs", "TrainState", "WarmStart", "epoch_cap", "final_outputs", "fit",
           "load_warm_start", "sample_negatives"]
