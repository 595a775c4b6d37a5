"""Artifact store (local disk or S3) and the stage-manifest commit protocol."""

from blast_ray.store.artifact_store import ArtifactStore
from blast_ray.store.manifest import MANIFEST_NAME, StageOutput, code_version, fingerprint, latest_output

__all__ = ["ArtifactStore", "StageOutput", "MANIFEST_NAME", "code_version", "fingerprint", "latest_output"]
