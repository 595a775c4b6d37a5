"""Stage outputs and their manifests: the commit protocol every stage follows.

Layout (``<store>`` is a local folder or ``s3://bucket/prefix``; paths built by
``blast_ray.store.layout``)::

    <store>/<dataset>/stages/<stage>/<fingerprint>/          data files of one stage output
    <store>/<dataset>/stages/<stage>/<fingerprint>/_MANIFEST.json   written LAST = the commit

``fingerprint = hash(stage, stage config, upstream fingerprints, code version)``. A stage output
whose manifest exists is complete and immutable; a prefix without a manifest is an interrupted
write and is wiped before the stage runs again. Re-running with the same inputs and config finds
the manifest and skips the stage.

Usage::

    out = StageOutput.open(store, "ml-100k", "etl", config=cfg.etl, inputs={"raw": raw_hash})
    if not out.done:
        ... write files under out.uri("interactions") ...
        out.commit(row_counts={"interactions": n}, timings={"total_s": t})
    manifest = out.manifest
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from blast_ray.store import layout
from blast_ray.store.artifact_store import ArtifactStore
from blast_ray.store.hashing import stable_hash, to_plain
from blast_ray.store.layout import MANIFEST_NAME

MANIFEST_SCHEMA = 1


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when run from a checkout (``0.1.0+g1a2b3c4``)."""
    from blast_ray import __version__

    try:
        here = os.path.dirname(os.path.abspath(__file__))
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__


def fingerprint(stage: str, config: Any, inputs: dict[str, str]) -> str:
    """Content key of a stage output. The code's package version is part of it; its git commit is
    recorded in the manifest but not hashed, so a docs-only commit does not invalidate outputs."""
    from blast_ray import __version__

    return stable_hash({"stage": stage, "config": config, "inputs": inputs, "version": __version__})


@dataclass
class StageOutput:
    """One (possibly not yet written) output of a stage, addressed by its fingerprint."""

    store: ArtifactStore
    dataset: str
    stage: str
    fingerprint: str
    config: Any
    inputs: dict[str, str]
    started_at: float = field(default_factory=time.time)

    @classmethod
    def open(
        cls, store: ArtifactStore, dataset: str, stage: str, config: Any, inputs: dict[str, str] | None = None
    ) -> "StageOutput":
        inputs = dict(inputs or {})
        return cls(store, dataset, stage, fingerprint(stage, config, inputs), config, inputs)

    @classmethod
    def committed(cls, store: ArtifactStore, dataset: str, stage: str, fingerprint: str) -> "StageOutput":
        """The committed output ``fingerprint`` of ``stage``, with the config and inputs of its manifest;
        ``FileNotFoundError`` when it has no manifest (never committed, or deleted)."""
        parts = layout.manifest_parts(dataset, stage, fingerprint)
        if not store.exists(*parts):
            raise FileNotFoundError(f"{store.uri(*parts)} does not exist: {stage} output {fingerprint} is not committed")
        m = store.read_json(*parts)
        return cls(store, dataset, stage, fingerprint, m.get("config"), m.get("inputs", {}))

    # ---- locations ---------------------------------------------------------------------------
    @property
    def parts(self) -> tuple[str, ...]:
        return layout.stage_parts(self.dataset, self.stage, self.fingerprint)

    def path(self, *sub: str) -> str:
        return self.store.path(*self.parts, *sub)

    def uri(self, *sub: str) -> str:
        return self.store.uri(*self.parts, *sub)

    # ---- state -------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.store.exists(*self.parts, MANIFEST_NAME)

    @property
    def manifest(self) -> dict[str, Any]:
        return self.store.read_json(*self.parts, MANIFEST_NAME)

    def begin(self) -> "StageOutput":
        """Wipe the leftovers of an interrupted write; call before writing files."""
        if self.done:
            raise RuntimeError(f"stage output {self.uri()} is already committed; outputs are immutable")
        self.store.delete_dir(*self.parts)
        self.started_at = time.time()
        return self

    def commit(
        self,
        row_counts: dict[str, int] | None = None,
        timings: dict[str, float] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write the manifest last: from this moment the output exists."""
        timings = dict(timings or {})
        timings.setdefault("total_s", round(time.time() - self.started_at, 3))
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "stage": self.stage,
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "inputs": self.inputs,
            "config": self.config if isinstance(self.config, dict) else _plain(self.config),
            "code_version": code_version(),
            "row_counts": {k: int(v) for k, v in (row_counts or {}).items()},
            "timings": timings,
            "files": self.store.list_files(*self.parts),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": f"{getpass.getuser()}@{socket.gethostname()}",
            "extra": extra or {},
        }
        self.store.write_json(manifest, *self.parts, MANIFEST_NAME)
        return manifest


def _plain(obj: Any) -> Any:
    return to_plain(obj)


def latest_output(store: ArtifactStore, dataset: str, stage: str) -> StageOutput | None:
    """The most recently committed output of ``stage`` (by manifest time), or None."""
    outputs = layout.committed_outputs(store, dataset, stage)
    return outputs[0] if outputs else None
