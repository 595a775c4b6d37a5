"""The run manifest: config, code version, stage status, input manifests, metrics, timings.

Layout: ``<store>/<dataset>/runs/<run_id>/run.json`` (``layout.run_manifest_parts``; rewritten
atomically after every stage) and ``run.log`` beside it (``layout.run_log_parts``): every log record
of the run's process from its start to its end (blast-ray's DEBUG lines under the ``blast`` entry
points, whose root logger is at DEBUG; third-party libraries from WARNING), written to a local temp
file while the run lasts and uploaded when it finishes or fails.

Liveness: while the run lives a daemon thread rewrites ``heartbeat_at`` (epoch seconds) every
``BLAST_HEARTBEAT_S`` seconds (default 30). A record still ``running`` whose heartbeat is older
than ``BLAST_RUN_STALE_S`` (default 5 heartbeats, at least 10 s) belongs to a process that died
without a word (SIGKILL, OOM kill, a lost node): ``effective_status`` calls it ``abandoned``
(``blast runs list/show``). SIGTERM/SIGINT are turned into exceptions by ``blast_ray.entry``, whose
handler calls :func:`abort_active`: the record is finished ``failed`` with the signal named.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from blast_ray.config import PipelineConfig
from blast_ray.store import ArtifactStore, code_version, layout


log = logging.getLogger(__name__)

# the format of run.log (every record of the run; the console has its own, shorter one)
FILE_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(process)d %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"

_ACTIVE: "set[RunRecord]" = set()  # records of this process not finished yet (for abort_active)


def heartbeat_interval_s() -> float:
    """Seconds between heartbeats: ``BLAST_HEARTBEAT_S`` (default 30)."""
    return max(0.05, float(os.environ.get("BLAST_HEARTBEAT_S", "30")))


def stale_after_s() -> float:
    """Heartbeat age after which a running record is abandoned: ``BLAST_RUN_STALE_S`` (default
    5 heartbeats, at least 10 s)."""
    env = os.environ.get("BLAST_RUN_STALE_S")
    return float(env) if env else max(10.0, 5 * heartbeat_interval_s())


def effective_status(run: dict[str, Any], now: float | None = None) -> str:
    """The record's status, with ``running`` turned into ``abandoned`` when its heartbeat (or, for
    records without one, its start) is older than :func:`stale_after_s`."""
    status = run.get("status", "?")
    if status != "running":
        return status
    beat = run.get("heartbeat_at")
    if not isinstance(beat, (int, float)):
        try:
            beat = time.mktime(time.strptime(run.get("started_at", ""), "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        except (ValueError, TypeError):
            return status
    return "abandoned" if (now or time.time()) - beat > stale_after_s() else status


def abort_active(reason: str) -> None:
    """Finish every unfinished record of this process as failed with ``reason`` (signal handlers)."""
    for rec in list(_ACTIVE):
        try:
            current = rec.data.get("current_stage")
            status = {name: st.get("status", "?") for name, st in rec.data.get("stages", {}).items()}
            if current:
                status[current] = "failed"
            rec.finish(status, failed=current or "-", error=reason)
        except Exception as e:  # noqa: BLE001 - the store may be the thing that failed
            log.warning("run %s: could not record %r (%s)", rec.run_id, reason, e)


@dataclass(eq=False)
class RunRecord:
    store: ArtifactStore
    dataset: str
    run_id: str
    data: dict[str, Any] = field(default_factory=dict)
    _log_handler: logging.FileHandler | None = field(default=None, repr=False)
    _write_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

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
        rec.data["heartbeat_at"] = time.time()
        rec.data["heartbeat_every_s"] = heartbeat_interval_s()
        rec._write()
        _ACTIVE.add(rec)
        threading.Thread(target=rec._beat, name=f"heartbeat-{run_id}", daemon=True).start()
        return rec

    def _beat(self) -> None:
        """Rewrite ``heartbeat_at`` every interval until finish (a failed write is logged, retried)."""
        every = heartbeat_interval_s()
        while not self._stop.wait(every):
            try:
                with self._write_lock:
                    if self._stop.is_set():
                        return
                    self.data["heartbeat_at"] = time.time()
                    self.store.write_json(self.data, *layout.run_manifest_parts(self.dataset, self.run_id))
            except Exception as e:  # noqa: BLE001 - a store hiccup must not kill the run
                log.debug("run %s: heartbeat not written (%s)", self.run_id, e)

    @property
    def parts(self) -> tuple[str, ...]:
        return layout.run_parts(self.dataset, self.run_id)

    def _write(self) -> None:
        with self._write_lock:
            self.data["heartbeat_at"] = time.time()
            self.store.write_json(self.data, *layout.run_manifest_parts(self.dataset, self.run_id))

    def begin_stage(self, name: str) -> None:
        """Note the stage now running (named if the process is stopped by a signal)."""
        self.data["current_stage"] = name

    def _start_log(self) -> None:
        """Attach a DEBUG file handler to the root logger (a local temp file, uploaded by finish)."""
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
        if self._stop.is_set():
            return  # already finished (a signal handler and the driver may both get here)
        self._stop.set()
        _ACTIVE.discard(self)
        self.data.pop("current_stage", None)
        self.data["status"] = "failed" if failed else "succeeded"
        self.data["failed_stage"] = failed
        self.data["error"] = error
        self.data["stage_status"] = status
        self.data["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write()
        self._upload_log()
