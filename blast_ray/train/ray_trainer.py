"""Training on Ray Train (several workers, or one with ``train.ray_train_single_worker``;
TorchTrainer + DDP; gloo on CPU, nccl on GPU): the thin Ray wrapper around
:func:`blast_ray.train.loop.train_loop`. Ray is imported only inside the functions.

Checkpoints (the full :class:`~blast_ray.train.loop.TrainState`) are reported every epoch by rank 0
through ``ray.train.report(..., checkpoint=Checkpoint.from_directory(...))`` into
``RunConfig(storage_path=<checkpoint parts[:-1]>, name=<fingerprint>)``; FailureConfig
(max_failures) restarts failed workers, which resume from ``ray.train.get_checkpoint()``. Ray Train
V2 (the default in Ray 2.60) resumes a re-submitted run with the same (storage_path, name) from
its latest checkpoint.

Inputs: with a :class:`~blast_ray.train.source.StoreInputs` (the train stage), ``train_loop_config``
carries only that reference and every worker builds its :class:`TrainInputs` from the store;
without one (in-memory callers), the inputs themselves are shipped in the config.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

import torch

from blast_ray.train import artifacts
from blast_ray.train.checkpoints import state_from_bytes, state_to_bytes
from blast_ray.train.inputs import TrainInputs, model_for
from blast_ray.train.loop import EvalPlan, TrainState, Worker, train_loop

log = logging.getLogger("blast_ray.train")

RESTARTS_FILE = artifacts.CHECKPOINT_RESTARTS_FILE


def _loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker. Returns (rank 0's value becomes ``Result.return_value``) where this
    attempt started: ``resumed_from_epoch`` is the checkpoint's epoch when the worker group was
    restarted after a failure (or the run re-submitted), None on a fresh start; ``restarts`` counts
    the starts from a checkpoint of this run so far (kept next to the state in each checkpoint)."""
    import ray.train
    from ray.train import Checkpoint

    cfg = config["cfg"]
    source = config.get("source")
    inputs: TrainInputs = source.load() if source is not None else config["inputs"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config.get("threads_per_worker", 1))))
    device = str(ray.train.torch.get_device()) if cfg.use_gpu else "cpu"
    resume, restarts = None, 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            with open(os.path.join(d, artifacts.CHECKPOINT_STATE_FILE), "rb") as f:
                resume = state_from_bytes(f.read())
            counter = os.path.join(d, RESTARTS_FILE)
            if os.path.exists(counter):
                with open(counter) as f:
                    restarts = int(json.load(f)["restarts"])
            restarts += 1
    torch.manual_seed(cfg.seed)  # identical init on every worker (DDP also broadcasts rank 0's)
    model = model_for(cfg, inputs).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else None

    def report(state: TrainState, row: dict[str, Any]) -> None:
        metrics = {k: float(v) for k, v in row.items() if isinstance(v, (int, float))}
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, artifacts.CHECKPOINT_STATE_FILE), "wb") as f:
                    f.write(state_to_bytes(state))
                with open(os.path.join(d, RESTARTS_FILE), "w") as f:
                    f.write(json.dumps({"restarts": restarts}))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics, checkpoint=None)

    final = train_loop(cfg, inputs, config["plan"], worker=Worker(rank, world, device, ddp), model=model, start=resume,
                       init_weights=config.get("init_state"), init_source=config.get("init_source", ""), on_epoch=report,
                       max_epochs=config.get("max_epochs"))
    return {"resumed_from_epoch": None if resume is None else int(resume.epoch), "epochs": int(final.epoch),
            "restarts": restarts}


def loop_config(cfg, inputs: TrainInputs | None, plan: EvalPlan, *, source=None,
                init_state: dict[str, Any] | None = None, init_source: str = "",
                max_epochs: int | None = None) -> dict[str, Any]:
    """The ``train_loop_config`` every worker receives: the train config, the evaluation plan, the
    warm start weights, and either ``source`` (a StoreInputs: a few strings, the worker loads the
    inputs from the store) or, when ``source`` is None, the ``inputs`` themselves (pickled into
    every worker)."""
    return {"cfg": cfg, "plan": plan, "threads_per_worker": 1, "init_state": init_state, "init_source": init_source,
            "source": source, "inputs": inputs if source is None else None, "max_epochs": max_epochs}


def fit_ray(
    cfg,
    inputs: TrainInputs,
    *,
    storage_path: str,
    name: str,
    storage_filesystem=None,
    plan: EvalPlan = EvalPlan(),
    init_state: dict[str, Any] | None = None,
    init_source: str = "",
    return_result: bool = False,
    source=None,
    max_epochs: int | None = None,
):
    """Train with ``cfg.num_workers`` Ray Train workers; returns the final :class:`TrainState`
    (read back from the last reported checkpoint), or (state, ray.train.Result) with
    ``return_result``. ``init_state``: warm start weights, loaded by every worker unless it
    resumes from a checkpoint of this run. ``source``: where the workers read the inputs (see
    :func:`loop_config`); ``inputs`` then stay on the driver. ``max_epochs``: stop after that many
    epochs of this submission (tests simulate an interrupted run)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from blast_ray.runtime import ensure_ray

    ensure_ray()
    trainer = TorchTrainer(
        _loop_per_worker,
        train_loop_config=loop_config(cfg, inputs, plan, source=source, init_state=init_state,
                                      init_source=init_source, max_epochs=max_epochs),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": 0.5} if not cfg.use_gpu else None,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {name} finished without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d:
        with open(os.path.join(d, artifacts.CHECKPOINT_STATE_FILE), "rb") as f:
            state = state_from_bytes(f.read())
    return (state, result) if return_result else state
