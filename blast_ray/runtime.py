"""Process-wide runtime helpers: connect to (or start) Ray the same way in every stage."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

# Environment every blast-ray process (the CLI, the local Ray cluster's workers, a cluster job's tasks)
# starts with unless the user set the variable: torch reads it at its first CPU allocation.
#   THP_MEM_ALLOC_ENABLE=1: torch backs CPU tensors of 2 MiB and more with transparent huge pages
#   (2 MiB-aligned, madvise(MADV_HUGEPAGE)). A training step allocates a few dozen whole-table
#   tensors (400 MB each at 10M interactions) whose fresh pages the kernel faults in 4 KiB at a time,
#   and its gathers and sparse products walk those tables at random (a TLB miss per row at 4 KiB).
#   Measured with benchmarks/train_scaling.py (BLAST, 2-CPU VM, median of 3): epoch 512 -> 341 s at
#   10M, 37 -> 31 s at 1M, the same peak memory (docs/SCALING.md). No effect where the kernel's THP
#   mode is "never"; set THP_MEM_ALLOC_ENABLE=0 to opt out.
PROCESS_ENV_DEFAULTS = {"THP_MEM_ALLOC_ENABLE": "1"}


_FILLED_IN: set[str] = set()  # names of the defaults this process set itself (the user had not)


def apply_process_env_defaults() -> dict[str, str]:
    """Set :data:`PROCESS_ENV_DEFAULTS` in ``os.environ`` where the user has not set them. Call
    before torch allocates. Returns the ones this process filled in (now or in an earlier call):
    what a Ray job passes on as ``env_vars``. A value the user set (the shell, a submitted job's
    ``runtime_env``) is left alone and not passed again: Ray refuses a driver ``runtime_env``
    that names an env var the submitted job already names."""
    for key, value in PROCESS_ENV_DEFAULTS.items():
        if key not in os.environ:
            os.environ[key] = value
            _FILLED_IN.add(key)
    return {key: PROCESS_ENV_DEFAULTS[key] for key in _FILLED_IN if os.environ.get(key) == PROCESS_ENV_DEFAULTS[key]}


def ensure_ray(num_cpus: int | None = None):
    """Connect to the cluster in ``RAY_ADDRESS`` (or the job's cluster), else start a local one.

    A local instance binds its dashboard / job server to 127.0.0.1 and gets a bounded object store
    (``BLAST_RAY_OBJECT_STORE_BYTES``, default 1 GiB) so several tools can share a small machine. Returns the ``ray`` module.
    """
    import ray

    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # a local cluster's raylet inherits this environment and passes it on to its workers; a cluster
    # started elsewhere gets it as the job's env_vars (Ray merges them with a submitted job's own)
    process_env = apply_process_env_defaults()
    sigterm = _python_sigterm_handler()
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True, configure_logging=False,
                 runtime_env={"env_vars": process_env} if process_env else None)
    else:
        store_bytes = int(os.environ.get("BLAST_RAY_OBJECT_STORE_BYTES", str(1 << 30)))
        ray.init(
            num_cpus=num_cpus,
            object_store_memory=store_bytes,
            include_dashboard=False,
            # the dashboard and its job server (off here; on if a user turns it on) listen on
            # loopback only. Ray's own gRPC ports (GCS, raylet, agents) still listen on all
            # interfaces (not configurable in 2.60; _node_ip_address does not change it): token
            # auth, on by default, guards them.
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    if sigterm is not None:
        # Ray's C++ core installs its own fatal-signal handler for SIGTERM in the driver, which prints
        # "*** SIGTERM received ***" and kills the process: the run record would stay "running" and
        # run.log would be lost. Give SIGTERM back to the entry point's handler (blast_ray.entry).
        signal.signal(signal.SIGTERM, sigterm)
    quiet_ray_data()
    return ray


def _python_sigterm_handler():
    """The Python SIGTERM handler installed by an entry point, or None (default handling)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    h = signal.getsignal(signal.SIGTERM)
    return h if callable(h) else None


def quiet_ray_data() -> None:
    """Ray Data's progress bars and execution plans only when a person watches a terminal (and
    with -v); otherwise its console handler shows warnings only (its own log file keeps the rest)."""
    import logging as _logging
    import sys

    from ray.data import DataContext

    verbose = os.environ.get("BLAST_LOG_LEVEL") == "1"
    terminal = sys.stdout.isatty() and sys.stderr.isatty()
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = terminal
    if not terminal:
        from ray.util.debug import log_once

        log_once("ray_data_progress_manager_disabled")  # our choice: spare its "Progress bars disabled" warning
    ctx.print_on_execution_start = terminal or verbose
    ctx.execution_options.verbose_progress = verbose
    if not (terminal or verbose):
        for h in _logging.getLogger("ray.data").handlers:
            if isinstance(h, _logging.StreamHandler) and not isinstance(h, _logging.FileHandler):
                h.setLevel(_logging.WARNING)
                h.addFilter(_drop_reraised_task_errors)


_RERAISED = ("ray.data.exceptions", "ray.data._internal.execution.streaming_executor_state")


def _drop_reraised_task_errors(record) -> bool:
    """Off the console: Ray Data's ERROR lines about a failed task ("An exception was raised from a
    task of operator ...", "Exception occurred in user code ..."). The exception itself reaches
    the driver, which says it in one line; Ray Data's log file keeps these."""
    return not (record.levelno >= 40 and record.name in _RERAISED)
