"""The run manifest: config, code version, stage status, input manifests, metrics, timings.

Layout: ``<store>/<dataset>/runs/<run_id>/run.json`` (``layout.run_manifest_parts``; rewritten
atomically after every stage) and ``run.log`` beside it (``layout.run_log_parts``): every log record
of the run's process from its start to its end (blast-ray's DEBUG lines under the ``blast`` entry
points, whose root logger is at DEBUG; third-party libraries from WARNING), written to a local temp
file while the run lasts and uploaded when it finishes or fails.
"""

from __future__ import annotations

import logging
import os
import tempfile
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
    _log_handler: logging.FileHandler | None = field(default=None, repr=False)

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
        rec._start_log()
        rec._write()
        return rec

    @property
    def parts(self) -> tuple[str, ...]:
        return layout.run_parts(self.dataset, self.run_id)

    def _write(self) -> None:
        self.store.write_json(self.data, *layout.run_manifest_parts(self.dataset, self.run_id))

    def _start_log(self) -> None:
        """Attach a DEBUG file handler to the root logger (a local temp file, uploaded by finish)."""
        from blast_ray.entry import DATE_FORMAT, FILE_FORMAT

        fd, path = tempfile.mkstemp(prefix=f"blast-{self.run_id}-", suffix=".log")
        os.close(fd)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(FILE_FORMAT, DATE_FORMAT))
        logging.getLogger().addHandler(handler)
        self._log_handler = handler

    def _upload_log(self) -> None:
        """Detach the run's log handler and write its file as run.log next to run.json."""
        handler, self._log_handler = self._log_handler, None
        if handler is None:
            return
        logging.getLogger().removeHandler(handler)
        handler.close()
        try:
            with open(handler.baseFilename, "rb") as f:
                self.store.write_bytes(f.read(), *layout.run_log_parts(self.dataset, self.run_id))
        finally:
            os.unlink(handler.baseFilename)

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
        self._upload_log()
