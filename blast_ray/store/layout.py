"""The store's path scheme: every path inside an :class:`ArtifactStore` is built here.

Layout (``<store>`` is a local folder or ``s3://bucket/prefix``)::

    <store>/raw/<dataset>/...                                      ``blast datasets get`` downloads (local)
    <store>/<dataset>/stages/<stage>/<fingerprint>/...             one stage output (immutable once committed)
    <store>/<dataset>/stages/<stage>/<fingerprint>/_MANIFEST.json  written last: the commit
    <store>/<dataset>/cache/<stage>/...                            per-batch results of an unfinished stage (resume)
    <store>/<dataset>/checkpoints/<train fingerprint>/...          training checkpoints
    <store>/<dataset>/runs/<run_id>/run.json                       run manifest
    <store>/<dataset>/runs/<run_id>/report.html                    the run's report (``blast_ray.report.artifacts``)
    <store>/<dataset>/runs/LATEST.json                             the promoted run (atomic pointer)
    <store>/<dataset>/runs/LOCK.json                               the nightly lock (owner + expiry)
    <store>/<dataset>/nightly/STATE.json                           inbox files of the last nightly run

Functions return *parts* (a tuple of path segments) for the ``ArtifactStore`` methods
(``store.read_json(*layout.run_manifest_parts(ds, run_id))``). The file names inside a stage
output belong to that stage's ``artifacts`` module, not to this one.

Every part goes through :func:`check_part` (``ArtifactStore.path`` calls it too), so a dataset
name, run id or file name taken from a config or a command line can never leave the store root:
a part that is empty, ``.``, ``..``, contains ``/``, ``\\``, ``%``, ``~``, ``:``, a control or
non-ASCII character, has surrounding whitespace or is longer than 255 characters is refused
with a ``ValueError`` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # manifest.py imports this module: no import cycle at run time
    from blast_ray.store.artifact_store import ArtifactStore
    from blast_ray.store.manifest import StageOutput

STAGES_DIR = "stages"
RUNS_DIR = "runs"
CHECKPOINTS_DIR = "checkpoints"
CACHE_DIR = "cache"
NIGHTLY_DIR = "nightly"
RAW_DIR = "raw"

MANIFEST_NAME = "_MANIFEST.json"  # the commit of a stage output
RUN_LOG_NAME = "run.log"
RUN_MANIFEST_NAME = "run.json"
LATEST_NAME = "LATEST.json"
LOCK_NAME = "LOCK.json"
NIGHTLY_STATE_NAME = "STATE.json"

MAX_PART_LEN = 255  # the usual file-name limit (ext4, APFS, NTFS); S3 keys allow more, disks do not
_FORBIDDEN_CHARS = frozenset("/\\%~:")


def check_part(part: object) -> str:
    """``part`` itself when it is one safe path segment, else ``ValueError`` saying why.

    Refused: non-strings, ``""``, ``"."``, ``".."``, any of ``/ \\ % ~ :`` (separators, URL
    escapes such as ``%2e%2e``, home expansion, drive letters), control characters (NUL included),
    non-ASCII characters (look-alikes such as U+2024 ONE DOT LEADER), leading or trailing
    whitespace, more than 255 characters.
    """
    if not isinstance(part, str):
        raise ValueError(f"store path part {part!r} is a {type(part).__name__}, expected a string")
    why = ""
    if part in ("", ".", ".."):
        why = "empty or a relative-directory name"
    elif len(part) > MAX_PART_LEN:
        why = f"longer than {MAX_PART_LEN} characters ({len(part)})"
    elif any(c in _FORBIDDEN_CHARS for c in part):
        why = "contains one of / \\ % ~ : (a path separator, an escape or a drive/home prefix)"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in part):
        why = "contains a control character (NUL included)"
    elif not part.isascii():
        why = "contains a non-ASCII character"
    elif part != part.strip():
        why = "has leading or trailing whitespace"
    if why:
        raise ValueError(
            f"store path part {part!r} is refused: {why}; dataset names, run ids, stage names and file names "
            "must be single plain ASCII segments (letters, digits, '-', '_', '.', '=')"
        )
    return part


def check_parts(parts: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Every part checked (:func:`check_part`); returns them as a tuple."""
    return tuple(check_part(p) for p in parts)


def rel_parts(relpath: str) -> tuple[str, ...]:
    """A relative path with ``/`` separators (as ``ArtifactStore.list_files`` returns) as checked parts."""
    return check_parts(relpath.split("/"))


# ---- stage outputs --------------------------------------------------------------------------
def stage_root(dataset: str, stage: str) -> tuple[str, ...]:
    """Folder holding every output (one per fingerprint) of ``stage``."""
    return check_parts((dataset, STAGES_DIR, stage))


def stage_parts(dataset: str, stage: str, fingerprint: str, *sub: str) -> tuple[str, ...]:
    """One stage output's folder (``sub``: a file or folder inside it)."""
    return check_parts((dataset, STAGES_DIR, stage, fingerprint, *sub))


def manifest_parts(dataset: str, stage: str, fingerprint: str) -> tuple[str, ...]:
    return stage_parts(dataset, stage, fingerprint, MANIFEST_NAME)


def committed_outputs(store: "ArtifactStore", dataset: str, stage: str) -> list["StageOutput"]:
    """The committed outputs of ``stage`` (those with a manifest), newest first.

    Order: manifest ``created_at`` then fingerprint, both descending (the fingerprint only breaks
    ties within one second). Each output carries the config and inputs of its manifest.
    """
    from blast_ray.store.manifest import StageOutput

    found: list[tuple[tuple[str, str], StageOutput]] = []
    for fp in store.list_dir(*stage_root(dataset, stage)):
        if not store.exists(*manifest_parts(dataset, stage, fp)):
            continue  # an interrupted write: not an output
        m = store.read_json(*manifest_parts(dataset, stage, fp))
        out = StageOutput(store, dataset, stage, fp, m.get("config"), m.get("inputs", {}))
        found.append(((m.get("created_at", ""), fp), out))
    found.sort(key=lambda kv: kv[0], reverse=True)
    return [out for _, out in found]


# ---- runs -----------------------------------------------------------------------------------
def runs_root(dataset: str) -> tuple[str, ...]:
    return check_parts((dataset, RUNS_DIR))


def run_parts(dataset: str, run_id: str, *sub: str) -> tuple[str, ...]:
    """One run's folder (``sub``: a file inside it, e.g. the report)."""
    return check_parts((dataset, RUNS_DIR, run_id, *sub))


def run_manifest_parts(dataset: str, run_id: str) -> tuple[str, ...]:
    return run_parts(dataset, run_id, RUN_MANIFEST_NAME)


def run_log_parts(dataset: str, run_id: str) -> tuple[str, ...]:
    """The run's full log (``run.log``), next to its ``run.json``."""
    return run_parts(dataset, run_id, RUN_LOG_NAME)


def latest_parts(dataset: str) -> tuple[str, ...]:
    """The ``latest`` pointer (the promoted run)."""
    return check_parts((dataset, RUNS_DIR, LATEST_NAME))


def lock_parts(dataset: str) -> tuple[str, ...]:
    """The store lock of ``dataset`` (nightly runs)."""
    return check_parts((dataset, RUNS_DIR, LOCK_NAME))


# ---- checkpoints, caches, nightly state, raw downloads ---------------------------------------
def checkpoint_parts(dataset: str, fingerprint: str, *sub: str) -> tuple[str, ...]:
    """Training checkpoints of the train output ``fingerprint``: outside the stage prefix, because an
    uncommitted prefix is wiped before the stage re-runs and checkpoints must survive that."""
    return check_parts((dataset, CHECKPOINTS_DIR, fingerprint, *sub))


def cache_parts(dataset: str, stage: str, *sub: str) -> tuple[str, ...]:
    """Resumable per-batch results of ``stage`` (profiles): outside the stage prefix for the same reason."""
    return check_parts((dataset, CACHE_DIR, stage, *sub))


def nightly_state_parts(dataset: str) -> tuple[str, ...]:
    """Which inbox files (by sha256) went into the last nightly run."""
    return check_parts((dataset, NIGHTLY_DIR, NIGHTLY_STATE_NAME))


def raw_download_dir(root: str | Path, dataset: str) -> Path:
    """Local folder of ``blast datasets get <dataset>`` under the store folder ``root``."""
    return Path(root) / RAW_DIR / check_part(dataset)
