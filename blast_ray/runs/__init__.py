"""Run records: every pipeline invocation has an id and a manifest under <dataset>/runs/<id>/."""

from blast_ray.runs.record import RunRecord, abort_active, effective_status
from blast_ray.runs.registry import (
    LockHeld,
    StoreLock,
    flat_metrics,
    get_latest,
    list_runs,
    load_run,
    promote,
)

__all__ = ["RunRecord", "abort_active", "effective_status", "LockHeld", "StoreLock", "flat_metrics", "get_latest", "list_runs", "load_run", "promote"]
