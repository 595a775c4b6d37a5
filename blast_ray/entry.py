"""What every entry point shares: arguments, config loading, logging, exit codes.

The four entry points (``blast``, ``python -m jobs.pipeline``, ``python -m jobs.nightly``,
``spark/etl_job.py``) build their parsers from :func:`add_config_args` and
:func:`add_verbosity_args`, load the config with :func:`load_config_from_args` and run their
body through :func:`main_wrapper`, so they agree on:

* arguments: ``--config PATH``, ``--set SECTION.KEY=VALUE`` (repeatable), ``--store URI``,
  ``-v/--verbose`` and ``-q/--quiet`` (accepted before or after a sub-command);
* exit codes: 0 success, 1 a stage (or the job) failed, 2 a bad config or argument
  (``ConfigError``, :class:`UsageError`, a missing file), 130 interrupted (SIGINT), 143 terminated
  (SIGTERM: the run record is finished ``failed`` naming the signal, no traceback); a closed stdout pipe
  (``blast runs show X | head -1``) ends quietly with 0;
* messages: one line ``<prog>: ...`` on stderr naming the file/URL and the cause
  (``blast_ray.errors.one_line``: Spark/py4j, Ray task and store errors unwrapped), the traceback
  only with ``-v`` (and always in the run's ``run.log``);
* logging: the console shows blast-ray's INFO lines (one per finished stage), third-party
  libraries only from WARNING; ``-v`` shows DEBUG, ``-q`` only warnings. The root logger keeps
  DEBUG records of blast-ray so a run's full log can be written next to its ``run.json``
  (``blast_ray.runs.record``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import Callable

from blast_ray.config import ConfigError, PipelineConfig, load_config
from blast_ray.runs.record import DATE_FORMAT, FILE_FORMAT  # run.log's format
from blast_ray.runtime import apply_process_env_defaults
from blast_ray.signals import Terminated, install_handlers, interrupt_behind, interrupt_in_chain, uninstall_handlers

log = logging.getLogger(__name__)

# Libraries whose INFO chatter (Spark's py4j, Ray's workers and Data plans, HTTP pools, model
# loaders) buries the pipeline's own lines; they log to the console from WARNING up.
THIRD_PARTY_LOGGERS = (
    "py4j", "pyspark", "ray", "ray.data", "ray.train", "ray.tune", "urllib3", "filelock", "fsspec",
    "botocore", "boto3", "s3transfer", "sentence_transformers", "transformers", "huggingface_hub",
    "torch", "PIL", "matplotlib", "asyncio", "httpx", "httpcore", "vllm", "faiss",
)

CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

EXAMPLE_CONFIGS_HINT = (
    "the example configs (ml-100k, amazon-*) live in the repository's configs/ folder and are not "
    "installed with the package: pass a path to a checkout's configs/*.yaml or to your own YAML"
)


class UsageError(ValueError):
    """A bad command-line argument (exit code 2), said in one line."""


def install_signal_handlers():
    """SIGTERM raises :class:`Terminated` in the main thread (``blast_ray.signals``)."""
    return install_handlers()


def _record_interrupt(e: KeyboardInterrupt) -> str:
    """Mark the process's unfinished runs failed with the signal named; the reason."""
    sig = "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
    reason = f"interrupted by {sig}" + (" (Ctrl-C)" if sig == "SIGINT" else "")
    try:
        from blast_ray.runs.record import abort_active

        abort_active(reason)
    except Exception as err:  # noqa: BLE001 - the store may be unreachable: the line still prints
        log.debug("could not record the interrupt: %s", err)
    return reason


# ---- arguments ---------------------------------------------------------------------------------
def add_config_args(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    """``--config``, ``--set`` (into ``args.overrides``) and ``--store``."""
    p.add_argument("--config", required=config_required, metavar="PATH",
                   help="pipeline YAML (examples in the repository's configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--store", metavar="URI",
                   help="artifact store: a local folder or s3://bucket/prefix (default: the config's store)")


def add_verbosity_args(p: argparse.ArgumentParser) -> None:
    """``-v/--verbose`` and ``-q/--quiet``. Their default is SUPPRESS so that a sub-command's copy
    does not overwrite a flag given before the sub-command (``blast -v run`` == ``blast run -v``)."""
    if "--verbose" in p._option_string_actions:  # already added (a job's arguments inside `blast`)
        return
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging on the console (third-party libraries from INFO)")
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="only warnings and errors on the console")


def verbosity(args: argparse.Namespace) -> int:
    """-1 quiet, 0 normal, 1 verbose."""
    if getattr(args, "verbose", False):
        return 1
    return -1 if getattr(args, "quiet", False) else 0


def load_config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The config named by ``args.config`` with ``args.overrides`` applied and ``args.store``
    replacing the config's store. Raises ConfigError (exit 2) with one line naming what to fix."""
    path = getattr(args, "config", None)
    if not path:
        raise UsageError("--config PATH is required (a pipeline YAML, e.g. configs/ml-100k.yaml)")
    if not os.path.exists(path):
        raise ConfigError(f"config file {path} does not exist; {EXAMPLE_CONFIGS_HINT}")
    cfg = load_config(path, overrides=list(getattr(args, "overrides", None) or []))
    if getattr(args, "store", None):
        cfg.store = args.store
    return cfg


# ---- logging -----------------------------------------------------------------------------------
def setup_logging(level: int = 0) -> None:
    """Console logging for ``level`` (-1 quiet, 0 normal, 1 verbose); idempotent.

    The root logger stays at DEBUG so file handlers (a run's ``run.log``) get blast-ray's DEBUG
    lines; the console handler filters by ``level``; third-party loggers are set to WARNING (INFO
    with ``-v``) at the logger, so their chatter is not even created.
    """
    console_level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}[max(-1, min(1, level))]
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_blast_console", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(CONSOLE_FORMAT, DATE_FORMAT))
    handler.setLevel(console_level)
    if level <= 0:
        handler.addFilter(_third_party_root_chatter)
    handler._blast_console = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    third_party = logging.INFO if level > 0 else logging.WARNING
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(third_party)
    os.environ["BLAST_LOG_LEVEL"] = str(level)  # read by blast_ray.runtime for Ray Data's console


def _third_party_root_chatter(record: logging.LogRecord) -> bool:
    """False for Spark-side (py4j/pyspark) records that are noise on the console, which the
    per-logger levels above cannot reach because py4j also logs through the *root* logger:

    * INFO/DEBUG through the root logger: py4j's ``logging.info("Exception while sending
      command.", exc_info=True)`` (a ``ConnectionResetError`` traceback, seen when Ray starts in
      the profiles stage after the ETL's Spark session; py4j retries on a new connection, nothing
      fails);
    * any record whose exception was caused by a signal landing in a JVM call (py4j's ERROR
      "KeyboardInterrupt while sending command." and "Exception occurred while shutting down
      connection"): ``main_wrapper`` says ``interrupted by SIGTERM`` in one line.

    Console only: the run's ``run.log`` keeps them; ``-v`` shows them."""
    path = record.pathname.replace("\\", "/")
    spark_side = record.name.split(".")[0] in ("py4j", "pyspark") or (
        record.name == "root" and ("/py4j/" in path or "/pyspark/" in path))
    if not spark_side:
        return True
    if record.exc_info and interrupt_in_chain(record.exc_info[1]) is not None:
        return False
    return not (record.name == "root" and record.levelno < logging.WARNING)


def console_is_terminal() -> bool:
    """True when a person watches: progress bars and Ray Data's execution plans only then."""
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# ---- running -----------------------------------------------------------------------------------
def main_wrapper(body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
                 argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv``, set up logging, run ``body(args)`` and map its outcome to an exit code.

    ``body`` returns 0 (success) or 1 (a stage failed; it printed which). ConfigError,
    UsageError, FileNotFoundError and ValueError -> 2 with one line ``<prog>: message``; any other
    exception -> 1 with one line (``errors.one_line``; the traceback with ``-v``); Ctrl-C -> 130,
    SIGTERM -> 143 (both finish the unfinished run records as failed, naming the signal); a closed stdout pipe
    -> 0 without a traceback.
    """
    prog = prog or parser.prog
    apply_process_env_defaults()  # before any tensor: torch reads its allocator settings once
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, message already printed)
        return int(e.code or 0)
    level = verbosity(args)
    setup_logging(level)
    previous_sigterm = install_signal_handlers()
    try:
        return _run_body(body, args, prog, level)
    finally:
        uninstall_handlers(previous_sigterm)


def _run_body(body: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str, level: int) -> int:
    """``body(args)`` with every outcome mapped to an exit code and one line (see main_wrapper)."""
    try:
        rc = int(body(args) or 0)
        interrupt = interrupt_behind(None) if rc else None
        if interrupt is not None:  # a SIGTERM a library swallowed (blast_ray.signals): not the body's failure
            raise interrupt
        return rc
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except KeyboardInterrupt as e:
        return _interrupted(prog, e)
    except Exception as e:  # noqa: BLE001 - an interrupt a library turned into an error is still the interrupt
        interrupt = interrupt_behind(e)
        if interrupt is not None:
            log.debug("%s", "".join(traceback.format_exception(e)))
            return _interrupted(prog, interrupt)
        return _failed(prog, e, level)


def _interrupted(prog: str, e: KeyboardInterrupt) -> int:
    reason = _record_interrupt(e)
    _print_error(prog, reason)
    return 128 + e.signum if isinstance(e, Terminated) else 130


def _failed(prog: str, e: Exception, level: int) -> int:
    """The exit code and one line for an error of the body's own: 2 for a bad config or argument,
    1 for the rest (the traceback in run.log, on the console with -v)."""
    trace = "".join(traceback.format_exception(e))
    log.debug("%s", trace)
    if isinstance(e, (ConfigError, UsageError, FileNotFoundError, ValueError)):
        msg = str(e) or type(e).__name__
        _print_error(prog, msg if isinstance(e, ConfigError) else msg.splitlines()[0])
        return 2
    from blast_ray.errors import one_line

    _print_error(prog, one_line(e) + ("" if level > 0 else " (run with -v for the traceback)"))
    if level > 0:
        print(trace, end="", file=sys.stderr)
    return 1


def _print_error(prog: str, message: str) -> None:
    try:
        print(f"{prog}: {message}", file=sys.stderr)
    except BrokenPipeError:
        pass


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush does not raise."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
