"""Artifact store (local disk or S3), its path scheme (``layout``) and the stage-manifest commit protocol."""

from blast_ray.store import layout
from blast_ray.store.artifact_store import ArtifactStore
from blast_ray.store.layout import committed_outputs
from blast_ray.store.manifest import MANIFEST_NAME, ContentHashMismatch, StageOutput, code_version, fingerprint, latest_output

__all__ = [
    "ArtifactStore", "StageOutput", "ContentHashMismatch", "MANIFEST_NAME", "code_version", "fingerprint", "latest_output",
    "committed_outputs", "layout",
]
