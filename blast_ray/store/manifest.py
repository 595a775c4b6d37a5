"""Stage outputs and their manifests: the commit protocol every stage follows.

Layout (``<store>`` is a local folder or ``s3://bucket/prefix``; paths built by
``blast_ray.store.layout``)::

    <store>/<dataset>/stages/<stage>/<fingerprint>/          data files of one stage output
    <store>/<dataset>/stages/<stage>/<fingerprint>/_MANIFEST.json   written LAST = the commit

``fingerprint = hash(stage, stage config, upstream fingerprints, code version)``. A stage output
whose manifest exists is complete and immutable; a prefix without a manifest is an interrupted
write and is wiped before the stage runs again. Re-running with the same inputs and config finds
the manifest and skips the stage.

The manifest keeps the sha256 and size of every committed file (``content``: ``{relative path:
{"sha256", "size"}}``, schema 2), hashed in streamed chunks through the ``ArtifactStore``.
:meth:`StageOutput.verify` re-hashes them: the pipeline recomputes a committed output that fails
(a WARNING names the file) instead of skipping to it, and :meth:`StageOutput.committed` (a reader
that loads an output by fingerprint) raises :class:`ContentHashMismatch`, one line naming the file.
Manifests of schema 1 (no ``content``) stay readable and are not checked.

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

MANIFEST_SCHEMA = 2  # 2: "content" (sha256 + size of every committed file)


class ContentHashMismatch(ValueError):
    """A committed file no longer matches the sha256/size its manifest recorded (bit rot, a partial
    copy, an edit by hand); the message is one line naming the file."""


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
        out = cls(store, dataset, stage, fingerprint, m.get("config"), m.get("inputs", {}))
        out.check(m)
        return out

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

    def verify(self, manifest: dict[str, Any] | None = None) -> list[str]:
        """One line per committed file that is missing or whose size or sha256 differs from the
        manifest's ``content`` (empty: all whole). Reads every file once, in chunks. A manifest
        without ``content`` (schema 1) has nothing to check: ``[]``."""
        manifest = self.manifest if manifest is None else manifest
        problems = []
        for rel, want in sorted((manifest.get("content") or {}).items()):
            sub = layout.rel_parts(rel)
            where = self.uri(*sub)
            if not self.store.exists(*self.parts, *sub):
                problems.append(f"content hash mismatch: {where} is missing (its manifest lists it)")
                continue
            sha, size = self.store.file_digest(*self.parts, *sub)
            if size != want.get("size"):
                problems.append(f"content hash mismatch: {where} has {size} bytes, its manifest says {want.get('size')}")
            elif sha != want.get("sha256"):
                problems.append(f"content hash mismatch: {where} has sha256 {sha[:16]}..., its manifest says "
                                f"{str(want.get('sha256'))[:16]}...")
        return problems

    def check(self, manifest: dict[str, Any] | None = None) -> None:
        """:meth:`verify`, raising :class:`ContentHashMismatch` (one line: the first bad file, how many
        more, and how to recompute) when a file is not whole."""
        problems = self.verify(manifest)
        if problems:
            more = f" (and {len(problems) - 1} more file(s))" if len(problems) > 1 else ""
            raise ContentHashMismatch(
                f"{problems[0]}{more}: the committed '{self.stage}' output {self.fingerprint} is damaged; "
                f"a run that includes the stage recomputes it (`blast {self.stage} --config ...`)")

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
        files = self.store.list_files(*self.parts)
        content = {}
        for rel in files:  # streamed: a large Parquet file is never held in memory
            sha, size = self.store.file_digest(*self.parts, *layout.rel_parts(rel))
            content[rel] = {"sha256": sha, "size": size}
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
            "files": files,
            "content": content,
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
