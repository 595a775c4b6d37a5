"""Training-state serialization and the single-process checkpoints in the artifact store.

Where: :func:`blast_ray.train.artifacts.checkpoint_parts` (outside the stage prefix, keyed by the
train fingerprint). The single-process path writes ``state-<epoch>.pt`` every epoch and then the
``LATEST`` pointer, so a crash mid-write never leaves a torn state in use. Loads are weights-only
(tensors, numbers, strings, lists, dicts): nothing is unpickled from the store.
"""

from __future__ import annotations

import io

import torch

from blast_ray.train import artifacts
from blast_ray.train.loop import TrainState


def state_to_bytes(state: TrainState) -> bytes:
    buf = io.BytesIO()
    torch.save(state.to_dict(), buf)
    return buf.getvalue()


def state_from_bytes(data: bytes) -> TrainState:
    return TrainState.from_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


class StoreCheckpoints:
    """Checkpoints of one run under ``store`` at ``parts`` (one folder)."""

    def __init__(self, store, *parts: str):
        self.store, self.parts = store, parts

    def save(self, state: TrainState, row: dict | None = None) -> None:
        name = artifacts.checkpoint_file(int(state.epoch))
        self.store.write_bytes(state_to_bytes(state), *self.parts, name)
        previous = self._latest_name()
        self.store.write_text(name, *self.parts, artifacts.CHECKPOINT_POINTER)
        if previous and previous != name:
            self.store.delete_file(*self.parts, previous)

    def _latest_name(self) -> str | None:
        if not self.store.exists(*self.parts, artifacts.CHECKPOINT_POINTER):
            return None
        return self.store.read_text(*self.parts, artifacts.CHECKPOINT_POINTER).strip()

    def load_latest(self) -> TrainState | None:
        name = self._latest_name()
        return None if name is None else state_from_bytes(self.store.read_bytes(*self.parts, name))
