"""The report stage's artifact: one self-contained HTML page per run, in the run's folder.

    <store>/<dataset>/runs/<run_id>/report.html   (``layout.run_parts``; not under the stage prefix:
                                                   the report stage is not cached, it runs every time)
    <store>/<dataset>/runs/<run_id>/report.png    its screenshot at 1,280 px, when a headless browser
                                                   rendered it (the tests do)
"""

from __future__ import annotations

from blast_ray.store import ArtifactStore, layout

REPORT_FILE = "report.html"
SCREENSHOT_FILE = "report.png"


def report_parts(dataset: str, run_id: str) -> tuple[str, ...]:
    return layout.run_parts(dataset, run_id, REPORT_FILE)


def write_report(store: ArtifactStore, dataset: str, run_id: str, html: str) -> str:
    """Write the run's report; returns its URI."""
    store.write_text(html, *report_parts(dataset, run_id))
    return store.uri(*report_parts(dataset, run_id))


def load_report(store: ArtifactStore, dataset: str, run_id: str) -> str:
    return store.read_text(*report_parts(dataset, run_id))


def screenshot_parts(dataset: str, run_id: str) -> tuple[str, ...]:
    """Where the report's screenshot goes: next to the report."""
    return layout.run_parts(dataset, run_id, SCREENSHOT_FILE)


def write_screenshot(store: ArtifactStore, dataset: str, run_id: str, png: bytes) -> str:
    """Store the screenshot of the run's report; returns its URI."""
    store.write_bytes(png, *screenshot_parts(dataset, run_id))
    return store.uri(*screenshot_parts(dataset, run_id))
