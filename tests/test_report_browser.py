"""The practitioner's report in a real headless browser (Debian's Chromium, installed by the
Makefile's ``browser`` target): the full ml-100k pipeline's report.html renders with no console
error and no horizontal overflow at 1,280 px, has every section, and its screenshot is stored next
to it (report/artifacts.py ``report.png``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from blast_ray.config import load_config
from blast_ray.pipeline import run_pipeline
from blast_ray.report import artifacts as report_artifacts
from blast_ray.store import ArtifactStore
from jobs.smoke import smoke_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WIDTH = 1280


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: `make browser` (root: apt-get install -y chromium) installs it")
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def _render(tmp_path: Path, page: Path, height: int = 2000) -> tuple[dict[str, int], list[str]]:
    """(the width probe's attributes, console error lines) of ``page`` loaded at 1,280 px."""
    res = _chromium(tmp_path, f"--window-size={WIDTH},{height}", "--dump-dom", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    probe = {k: int(v) for k, v in re.findall(r'data-(scroll-width|client-width|scroll-height)="(\d+)"', res.stdout)}
    return probe, _console_errors(res.stderr)


def test_console_error_detection_works(tmp_path):
    """The check below can fail: a page with a script error is caught, a wide page overflows."""
    from blast_ray.report.html import page

    bad = tmp_path / "bad.html"
    bad.write_text(page("broken", [("x", '<div style="width:3000px">wide</div><script>no_such_function()</script>')]))
    probe, errors = _render(tmp_path, bad)
    assert errors and any("no_such_function" in e for e in errors), errors
    assert probe["scroll-width"] > WIDTH


def test_report_renders_in_chromium_without_errors_or_overflow(data_dir, ml100k_features_copy, tmp_path):
    # etl, profiles and features come committed from the session's fixture (skipped by manifest:
    # the report reads their manifests all the same); graphs..report run here
    cfg = load_config(smoke_config(data_dir, str(ml100k_features_copy), tmp_path / "cfg.yaml", epochs=3,
                                   evaluate={"baselines": ["pop", "bpr"]}))
    res = run_pipeline(cfg)
    assert res.ok, res.error
    store = ArtifactStore(cfg.store)
    doc = report_artifacts.load_report(store, cfg.dataset.name, res.run_id)
    for section in ("Metrics vs baselines", "Results by user activity", "Coverage, novelty and popularity bias",
                    "Sample users", "Training curves", "kNN graphs", "OT augmentation", "Stage timings", "Config used"):
        assert f">{section}" in doc, section
    assert 'class="notrun"' not in doc, re.findall(r'<p class="notrun">[^<]*', doc)
    assert not re.search(r'(src|href)="(https?:)?//', doc), "the report must not load anything from the network"
    assert "title=best" in doc and "vs best baseline" in doc and "hit</span>" in doc
    assert "0.0000" not in doc  # tiny values in scientific notation, counts as integers

    page = Path(store.path(*report_artifacts.report_parts(cfg.dataset.name, res.run_id)))
    probe, errors = _render(tmp_path, page)
    assert not errors, errors
    assert probe["client-width"] <= WIDTH and probe["scroll-width"] <= probe["client-width"], probe
    shot = tmp_path / "report.png"
    height = min(max(probe["scroll-height"], 800), 16000)
    res_shot = _chromium(tmp_path, f"--window-size={WIDTH},{height}", f"--screenshot={shot}", "--hide-scrollbars",
                         page.as_uri())
    assert res_shot.returncode == 0 and shot.stat().st_size > 10_000, res_shot.stderr[-2000:]
    assert not _console_errors(res_shot.stderr)
    uri = report_artifacts.write_screenshot(store, cfg.dataset.name, res.run_id, shot.read_bytes())
    assert uri.endswith("report.png") and store.read_bytes(*report_artifacts.screenshot_parts(cfg.dataset.name, res.run_id))[:4] == b"\x89PNG"
