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

While held, a daemon thread renews the lease (a new ``expires_at``) every ``renew_every_s``
(default a third of the TTL), so a job that runs longer than the TTL keeps its lock; a renewal that
finds another owner stops and logs it. An expired lock (its holder died) is taken over by
compare-and-swap on its content, never by delete-then-create (two takers could both delete and
both create): local disk: ``flock`` on the lock file, re-read, replace only if it still holds the
expired content we saw; S3: ``If-Match`` on the expired object's ETag where the endpoint supports
it, else write, wait ``settle_s``, re-read and keep the lock only if the owner read back is us.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

from blast_ray.store import ArtifactStore, layout
from blast_ray.store.layout import LATEST_NAME, LOCK_NAME  # noqa: F401  (re-exported)
from blast_ray.store.names import validate_name

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
    validate_name(run_id, "run id")
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
    validate_name(run_id, "run id")
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


@dataclass(eq=False)
class StoreLock:
    """A lease in the store: ``<dataset>/runs/LOCK.json`` with owner and expiry.

    ``with StoreLock(store, "ml-100k", ttl_s=6*3600):`` refuses (``LockHeld``) while a live lock
    exists; an expired lock is taken over (its holder died). Released on exit.
    """

    store: ArtifactStore
    dataset: str
    ttl_s: float = 6 * 3600
    owner: str = ""
    renew_every_s: float | None = None  # default ttl_s / 3
    settle_s: float = 0.5  # S3 takeover without If-Match: wait before reading the owner back

    def __post_init__(self) -> None:
        self.owner = self.owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.renewals = 0

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

    # ---- takeover of an expired lock: compare-and-swap on its content ----------------------------
    def _take_over_local(self, seen: bytes) -> bool:
        import fcntl

        path = self.store.path(*self.parts)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return self._create_exclusive()  # released meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    return False  # replaced while we waited: someone else's lock now
            except FileNotFoundError:
                return False
            current = os.pread(fd, 1 << 16, 0)
            if current != seen:
                return False  # another taker (or a renewal) got there first
            body = self._body()
            os.ftruncate(fd, 0)
            os.pwrite(fd, body, 0)
            os.fsync(fd)
            return True
        finally:
            os.close(fd)  # releases the flock

    def _take_over_s3(self, seen: bytes) -> bool:
        import boto3
        from botocore.exceptions import ClientError

        bucket, _, key = self.store.path(*self.parts).partition("/")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client = boto3.client("s3", endpoint_url=endpoint)
        try:
            obj = client.get_object(Bucket=bucket, Key=key)
        except ClientError:
            return self._create_exclusive()
        if obj["Body"].read() != seen:
            return False
        try:
            client.put_object(Bucket=bucket, Key=key, Body=self._body(), IfMatch=obj["ETag"])
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            if code not in ("NotImplemented", "501"):
                raise
            self.store.write_bytes(self._body(), *self.parts)  # no If-Match: write, settle, read back
        time.sleep(self.settle_s)
        return (self.holder() or {}).get("owner") == self.owner

    def _read_raw(self) -> bytes | None:
        try:
            return self.store.read_bytes(*self.parts)
        except FileNotFoundError:
            return None

    # ---- renewal -----------------------------------------------------------------------------
    def renew(self) -> bool:
        """Push ``expires_at`` to now + TTL if we still own the lock; False when we do not."""
        held = self.holder() or {}
        if held.get("owner") != self.owner:
            return False
        now = time.time()
        body = {**held, "expires_at": now + self.ttl_s, "renewed_at": now}
        self.store.write_bytes(json.dumps(body).encode(), *self.parts)
        self.renewals += 1
        return True

    @staticmethod
    def _renew_loop(ref: "weakref.ref[StoreLock]", stop: threading.Event, every: float) -> None:
        """Renew until released; holds only a weak reference, so a lock object dropped without
        release (its owner gone) stops renewing and expires after its TTL like a dead holder's."""
        while not stop.wait(every):
            lock = ref()
            if lock is None:
                return
            try:
                if not lock.renew():
                    log.error("lock %s is no longer ours (owner %s); renewal stopped",
                              lock.store.uri(*lock.parts), (lock.holder() or {}).get("owner"))
                    return
            except Exception as e:  # noqa: BLE001 - retried at the next tick, before the TTL runs out
                log.warning("lock %s: renewal failed (%s); retrying", lock.store.uri(*lock.parts), e)
            del lock

    def _start_renewal(self) -> "StoreLock":
        if self.ttl_s <= 0:
            return self  # a lease that is already over (tests of expiry): nothing to keep alive
        self._stop = threading.Event()
        every = max(0.05, self.renew_every_s or self.ttl_s / 3)
        self._renewer = threading.Thread(target=StoreLock._renew_loop, args=(weakref.ref(self), self._stop, every),
                                         name="store-lock-renewal", daemon=True)
        self._renewer.start()
        return self

    def acquire(self) -> "StoreLock":
        if self._create_exclusive():
            return self._start_renewal()
        seen = self._read_raw()
        held = self.holder() or {}
        if seen is None:  # released between our create and our read
            if self._create_exclusive():
                return self._start_renewal()
            seen = self._read_raw() or b""
            held = self.holder() or {}
        if held.get("expires_at", 0) < time.time():
            log.warning("lock %s held by %s expired; taking it over", self.store.uri(*self.parts), held.get("owner"))
            taken = self._take_over_s3(seen) if self.store.is_s3 else self._take_over_local(seen)
            if taken:
                return self._start_renewal()
            held = self.holder() or {}
        raise LockHeld(
            f"another run holds {self.store.uri(*self.parts)} (owner {held.get('owner')}, "
            f"expires {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(held.get('expires_at', 0)))}); refusing to start"
        )

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
            self._renewer = None
        held = self.holder()
        if held and held.get("owner") == self.owner:
            self.store.delete_file(*self.parts)

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
