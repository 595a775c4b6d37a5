"""The run registry: list runs, the atomic ``latest`` pointer, promotion, and a store lock.

Layout under ``<store>/<dataset>/runs/`` (paths from ``blast_ray.store.layout``)::

    <run_id>/run.json      the run manifest (blast_ray.runs.record)
    <run_id>/report.html   the run's report (report stage)
    LATEST.json            {"run_id": ..., "promoted_at": ..., "reason": ..., "metrics": {...}}
    LOCK.json              the nightly lock: {"owner": ..., "expires_at": epoch seconds}

``LATEST.json`` is one small object written in one atomic step (local: temp file + rename; S3: a
single PUT), so a reader sees either the old or the new pointer, never a mix.

The lock: on local disk it is created with ``O_CREAT | O_EXCL`` (atomic). On S3 it is a
conditional PUT (``If-None-Match: *``, supported by AWS S3 since 2024 and by moto>=5.0.x); when the
endpoint rejects conditional writes we fall back to check-then-put and log the race window (two
writers that both see "no lock" within one round trip may both proceed).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from blast_ray.store import ArtifactStore, layout
from blast_ray.store.layout import LATEST_NAME, LOCK_NAME  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


def list_runs(store: ArtifactStore, dataset: str) -> list[dict[str, Any]]:
    """Every run manifest of ``dataset``, oldest first (run ids start with a UTC timestamp)."""
    runs = []
    for name in store.list_dir(*layout.runs_root(dataset)):
        if name in (LATEST_NAME, LOCK_NAME):
            continue  # the pointer and the lock live next to the run folders
        if store.exists(*layout.run_manifest_parts(dataset, name)):
            try:
                runs.append(store.read_json(*layout.run_manifest_parts(dataset, name)))
            except (json.JSONDecodeError, OSError) as e:  # a torn or unreadable manifest: counted, logged
                log.warning("run %s: unreadable run.json skipped (%s)", name, e)
    runs.sort(key=lambda r: (r.get("started_at", ""), r.get("run_id", "")))
    return runs


def load_run(store: ArtifactStore, dataset: str, run_id: str) -> dict[str, Any]:
    if not store.exists(*layout.run_manifest_parts(dataset, run_id)):
        raise FileNotFoundError(f"no run {run_id!r} under {store.uri(*layout.runs_root(dataset))}")
    return store.read_json(*layout.run_manifest_parts(dataset, run_id))


def flat_metrics(run: dict[str, Any]) -> dict[str, Any]:
    """The run's flat metrics ({"valid.recall@20": ..}), evaluate's over train's when both exist."""
    per_stage = run.get("metrics", {}) or {}
    out: dict[str, Any] = {}
    for stage in ("train", "evaluate"):
        out.update(per_stage.get(stage, {}) or {})
    return out


def get_latest(store: ArtifactStore, dataset: str) -> dict[str, Any] | None:
    """The ``latest`` pointer, or None when nothing was promoted yet."""
    if not store.exists(*layout.latest_parts(dataset)):
        return None
    return store.read_json(*layout.latest_parts(dataset))


def promote(store: ArtifactStore, dataset: str, run_id: str, reason: str = "manual", extra: dict | None = None) -> dict[str, Any]:
    """Point ``latest`` at ``run_id`` (atomically). Only a succeeded run can be promoted."""
    run = load_run(store, dataset, run_id)
    if run.get("status") != "succeeded":
        raise ValueError(f"run {run_id} has status {run.get('status')!r}; only succeeded runs can be promoted")
    pointer = {
        "run_id": run_id,
        "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reason": reason,
        "metrics": flat_metrics(run),
        "previous": (get_latest(store, dataset) or {}).get("run_id"),
        **(extra or {}),
    }
    store.write_json(pointer, *layout.latest_parts(dataset))
    run["promoted"] = pointer["promoted_at"]
    store.write_json(run, *layout.run_manifest_parts(dataset, run_id))
    return pointer


class LockHeld(RuntimeError):
    """Another process holds the store lock; the message names the owner and the expiry."""


@dataclass
class StoreLock:
    """A lease in the store: ``<dataset>/runs/LOCK.json`` with owner and expiry.

    ``with StoreLock(store, "ml-100k", ttl_s=6*3600):`` refuses (``LockHeld``) while a live lock
    exists; an expired lock is taken over (its holder died). Released on exit.
    """

    store: ArtifactStore
    dataset: str
    ttl_s: float = 6 * 3600
    owner: str = ""

    def __post_init__(self) -> None:
        self.owner = self.owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    @property
    def parts(self) -> tuple[str, ...]:
        return layout.lock_parts(self.dataset)

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({"owner": self.owner, "acquired_at": now, "expires_at": now + self.ttl_s}).encode()

    def _create_exclusive(self) -> bool:
        """Create the lock object only if absent; True when we created it."""
        if not self.store.is_s3:
            path = self.store.path(*self.parts)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(self._body())
            return True
        return self._s3_conditional_put()

    def _s3_conditional_put(self) -> bool:
        import boto3
        from botocore.exceptions import ClientError

        bucket, _, key = self.store.path(*self.parts).partition("/")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client = boto3.client("s3", endpoint_url=endpoint)
        try:
            client.put_object(Bucket=bucket, Key=key, Body=self._body(), IfNoneMatch="*")
            return True
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            if code in ("NotImplemented", "501"):
                log.warning("S3 endpoint has no conditional PUT: check-then-put lock (race window of one round trip)")
                if self.store.exists(*self.parts):
                    return False
                self.store.write_bytes(self._body(), *self.parts)
                return True
            raise

    def holder(self) -> dict[str, Any] | None:
        if not self.store.exists(*self.parts):
            return None
        try:
            return self.store.read_json(*self.parts)
        except (json.JSONDecodeError, OSError):
            return {"owner": "?", "expires_at": 0}

    def acquire(self) -> "StoreLock":
        if self._create_exclusive():
            return self
        held = self.holder() or {}
        if held.get("expires_at", 0) < time.time():
            log.warning("lock %s held by %s expired; taking it over", self.store.uri(*self.parts), held.get("owner"))
            self.store.delete_file(*self.parts)
            if self._create_exclusive():
                return self
            held = self.holder() or {}
        raise LockHeld(
            f"another run holds {self.store.uri(*self.parts)} (owner {held.get('owner')}, "
            f"expires {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(held.get('expires_at', 0)))}); refusing to start"
        )

    def release(self) -> None:
        held = self.holder()
        if held and held.get("owner") == self.owner:
            self.store.delete_file(*self.parts)

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
