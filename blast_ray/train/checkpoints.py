"""Single-process checkpoints in the artifact store (local or S3), outside the stage prefix:
``<store>/<dataset>/checkpoints/<train fingerprint>/state.pt``. Written every epoch (write to a
temp name then a pointer file, so a crash mid-write never leaves a torn ``state.pt`` in use)."""

from __future__ import annotations

from typing import Any

from blast_ray.train.trainer import state_from_bytes, state_to_bytes


class StoreCheckpoints:
    def __init__(self, store, *parts: str):
        self.store, self.parts = store, parts

    def save(self, state: dict[str, Any], row: dict[str, float] | None = None) -> None:
        name = f"state-{int(state['epoch']):06d}.pt"
        self.store.write_bytes(state_to_bytes(state), *self.parts, name)
        previous = self._latest_name()
        self.store.write_text(name, *self.parts, "LATEST")
        if previous and previous != name:
            self.store.delete_file(*self.parts, previous)

    def _latest_name(self) -> str | None:
        if not self.store.exists(*self.parts, "LATEST"):
            return None
        return self.store.read_text(*self.parts, "LATEST").strip()

    def load_latest(self) -> dict[str, Any] | None:
        name = self._latest_name()
        return None if name is None else state_from_bytes(self.store.read_bytes(*self.parts, name))
