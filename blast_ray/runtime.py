"""Process-wide runtime helpers: connect to (or start) Ray the same way in every stage."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def ensure_ray(num_cpus: int | None = None):
    """Connect to the cluster in ``RAY_ADDRESS`` (or the job's cluster), else start a local one.

    A local instance gets a bounded object store (``BLAST_RAY_OBJECT_STORE_BYTES``, default 1 GiB)
    so several tools can share a small machine. Returns the ``ray`` module.
    """
    import ray

    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True, configure_logging=False)
    else:
        store_bytes = int(os.environ.get("BLAST_RAY_OBJECT_STORE_BYTES", str(1 << 30)))
        ray.init(
            num_cpus=num_cpus,
            object_store_memory=store_bytes,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    return ray
