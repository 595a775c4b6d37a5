"""Run records: every pipeline invocation has an id and a manifest under <dataset>/runs/<id>/."""

from blast_ray.runs.record import RunRecord

__all__ = ["RunRecord"]
