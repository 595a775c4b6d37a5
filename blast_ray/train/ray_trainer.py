"""Multi-worker training on Ray Train (TorchTrainer + DDP; gloo on CPU, nccl on GPU).

Checkpoints (the full training state of ``train_worker_loop``) are reported every epoch by rank 0
through ``ray.train.report(..., checkpoint=Checkpoint.from_directory(...))`` into
``RunConfig(storage_path=<store>/<dataset>/checkpoints, name=<fingerprint>)``; FailureConfig
(max_failures) restarts failed workers, which resume from ``ray.train.get_checkpoint()``. Ray Train
V2 (the default in Ray 2.60) resumes a re-submitted run with the same (storage_path, name) from
its latest checkpoint.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import torch

from blast_ray.config import TrainConfig
from blast_ray.train.trainer import TrainInputs, build_model, state_from_bytes, state_to_bytes, train_worker_loop

log = logging.getLogger("blast_ray.train")

STATE_FILE = "train_state.pt"


def _loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    from ray.train import Checkpoint

    cfg: TrainConfig = config["cfg"]
    inputs: TrainInputs = config["inputs"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config.get("threads_per_worker", 1))))
    device = "cpu"
    if cfg.use_gpu:
        device = str(ray.train.torch.get_device())
    resume = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            with open(os.path.join(d, STATE_FILE), "rb") as f:
                resume = state_from_bytes(f.read())
    torch.manual_seed(cfg.seed)  # identical init on every worker (DDP also broadcasts rank 0's)
    model = build_model(cfg, inputs).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else None

    def save_state(state: dict[str, Any], row: dict[str, float]) -> None:
        metrics = {k: float(v) for k, v in row.items() if isinstance(v, (int, float))}
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, STATE_FILE), "wb") as f:
                    f.write(state_to_bytes(state))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics, checkpoint=None)
        crash_at = config.get("crash_at_epoch")  # fault-injection for the kill-a-worker test
        if crash_at is not None and rank == world - 1 and state["epoch"] == crash_at and resume is None:
            os._exit(1)

    train_worker_loop(
        cfg, inputs, ks=config["ks"], batch_users=config["batch_users"], rank=rank, world=world,
        ddp_model=ddp, model=model, resume_state=resume, save_state=save_state, device=device,
        init_state=config.get("init_state"), init_source=config.get("init_source", ""),
    )


def fit_ray(
    cfg: TrainConfig,
    inputs: TrainInputs,
    *,
    storage_path: str,
    name: str,
    storage_filesystem=None,
    ks: tuple[int, ...] = (20,),
    batch_users: int = 4096,
    crash_at_epoch: int | None = None,
    init_state: dict[str, Any] | None = None,
    init_source: str = "",
) -> dict[str, Any]:
    """Train with ``cfg.num_workers`` Ray Train workers; returns the final training state dict
    (read back from the last reported checkpoint). ``init_state``: warm start weights, loaded by
    every worker unless it resumes from a checkpoint of this run."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from blast_ray.runtime import ensure_ray

    ensure_ray()
    trainer = TorchTrainer(
        _loop_per_worker,
        train_loop_config={
            "cfg": cfg, "inputs": inputs, "ks": tuple(ks), "batch_users": batch_users,
            "crash_at_epoch": crash_at_epoch, "threads_per_worker": 1,
            "init_state": init_state, "init_source": init_source,
        },
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
        with open(os.path.join(d, STATE_FILE), "rb") as f:
            return state_from_bytes(f.read())
