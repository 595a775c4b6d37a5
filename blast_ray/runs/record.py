"""The run manifest: config, code version, stage status, input manifests, metrics, timings.

Layout: ``<store>/<dataset>/runs/<run_id>/run.json`` (``layout.run_manifest_parts``; rewritten
atomically after every stage).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from blast_ray.config import PipelineConfig
from blast_ray.store import ArtifactStore, code_version, layout


@dataclass
class RunRecord:
    store: ArtifactStore
    dataset: str
    run_id: str
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, store: ArtifactStore, cfg: PipelineConfig, run_id: str, stages: tuple[str, ...]) -> "RunRecord":
        rec = cls(store, cfg.dataset.name, run_id)
        rec.data = {
            "run_id": run_id,
            "dataset": cfg.dataset.name,
            "status": "running",
            "stages_selected": list(stages),
            "config": cfg.to_dict(),
            "code_version": code_version(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "stages": {},
        }
        rec._write()
        return rec

    @property
    def parts(self) -> tuple[str, ...]:
        return layout.run_parts(self.dataset, self.run_id)

    def _write(self) -> None:
        self.store.write_json(self.data, *layout.run_manifest_parts(self.dataset, self.run_id))

    def stage(self, name: str, status: str, manifest: dict[str, Any]) -> None:
        self.data["stages"][name] = {
            "status": status,
            "fingerprint": manifest.get("fingerprint"),
            "timings": manifest.get("timings", {}),
            "row_counts": manifest.get("row_counts", {}),
            "inputs": manifest.get("inputs", {}),  # upstream fingerprints this output was built from
            "uri": self.store.uri(*layout.stage_parts(self.dataset, name, manifest["fingerprint"])) if manifest.get("fingerprint") else None,
        }
        metrics = manifest.get("extra", {}).get("metrics")
        if metrics:
            self.data.setdefault("metrics", {})[name] = metrics
        self._write()

    def finish(self, status: dict[str, str], failed: str | None = None, error: str | None = None) -> None:
        self.data["status"] = "failed" if failed else "succeeded"
        self.data["failed_stage"] = failed
        self.data["error"] = error
        self.data["stage_status"] = status
        self.data["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write()
