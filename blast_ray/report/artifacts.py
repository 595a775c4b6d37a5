"""The report stage's artifact: one self-contained HTML page per run, in the run's folder.

    <store>/<dataset>/runs/<run_id>/report.html   (``layout.run_parts``; not under the stage prefix:
                                                   the report stage is not cached, it runs every time)
"""

from __future__ import annotations

from blast_ray.store import ArtifactStore, layout

REPORT_FILE = "report.html"


def report_parts(dataset: str, run_id: str) -> tuple[str, ...]:
    return layout.run_parts(dataset, run_id, REPORT_FILE)


def write_report(store: ArtifactStore, dataset: str, run_id: str, html: str) -> str:
    """Write the run's report; returns its URI."""
    store.write_text(html, *report_parts(dataset, run_id))
    return store.uri(*report_parts(dataset, run_id))


def load_report(store: ArtifactStore, dataset: str, run_id: str) -> str:
    return store.read_text(*report_parts(dataset, run_id))
