"""Fault: SIGKILL the driver (``python -m blast_ray.cli run``, its whole process group) in the middle
of the features stage, after it wrote part of its output (``item_text``) and before its manifest.

Then: no manifest is committed for the stage, no reader takes the half-written output (the
committed-output lookups see nothing), and a rerun of the same command skips the stages committed
before the kill and finishes. Data: real MovieLens-100k (smoke config), ETL from the session's
committed output (``ml100k_store``), template profiles, the offline MiniLM text encoder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blast_ray.store import ArtifactStore, StageOutput, latest_output

pytestmark = pytest.mark.faults

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STAGES = "etl,profiles,features"


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")


def _half_written_features(store_root: Path) -> list[Path]:
    """Files of an uncommitted features output (a folder without _MANIFEST.json)."""
    root = store_root / "ml-100k" / "stages" / "features"
    if not root.is_dir():
        return []
    return [f for d in root.iterdir() if d.is_dir() and not (d / "_MANIFEST.json").exists()
            for f in d.rglob("*") if f.is_file() and ".tmp" not in f.name]


def _run_record(store_root: Path, run_id: str) -> dict:
    return json.loads((store_root / "ml-100k" / "runs" / run_id / "run.json").read_text())


def test_killed_driver_commits_nothing_and_rerun_skips_done_stages(ml100k_store, data_dir, tmp_path):
    from jobs.smoke import smoke_config

    cfg = smoke_config(data_dir, str(ml100k_store), tmp_path / "cfg.yaml")
    cmd = [sys.executable, "-m", "blast_ray.cli", "run", "--config", str(cfg), "--stages", STAGES]
    log = open(tmp_path / "killed.log", "wb")
    proc = subprocess.Popen([*cmd, "--run-id", "killed"], cwd=PROJECT_ROOT, env=_env(), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None and not _half_written_features(ml100k_store):
            time.sleep(0.1)
        alive = proc.poll() is None
        half = _half_written_features(ml100k_store)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started (Ray, Spark)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    out_text = (tmp_path / "killed.log").read_text(errors="replace")
    assert alive, f"the run ended before the features stage wrote anything:\n{out_text[-3000:]}"
    assert half, f"no half-written features output within 400 s:\n{out_text[-3000:]}"
    assert proc.returncode == -signal.SIGKILL

    store = ArtifactStore(str(ml100k_store))
    # the killed stage: files on disk, no manifest, so no reader takes them
    fp = half[0].relative_to(ml100k_store / "ml-100k" / "stages" / "features").parts[0]
    assert not (ml100k_store / "ml-100k" / "stages" / "features" / fp / "_MANIFEST.json").exists()
    assert latest_output(store, "ml-100k", "features") is None
    with pytest.raises(FileNotFoundError, match="not committed"):
        StageOutput.committed(store, "ml-100k", "features", fp)
    # the stages before it were committed by the killed run (or before it: etl)
    assert latest_output(store, "ml-100k", "etl") is not None and latest_output(store, "ml-100k", "profiles") is not None
    killed = _run_record(ml100k_store, "killed")  # its last heartbeat: features never recorded as done
    assert killed["status"] == "running"
    assert {s: v["status"] for s, v in killed["stages"].items()} == {"etl": "skipped", "profiles": "ran"}

    res = subprocess.run([*cmd, "--run-id", "rerun"], cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rerun = _run_record(ml100k_store, "rerun")
    assert rerun["status"] == "succeeded"
    assert {s: v["status"] for s, v in rerun["stages"].items()} == {"etl": "skipped", "profiles": "skipped",
                                                                    "features": "ran"}
    console = res.stderr + res.stdout
    assert "stage etl       skipped" in console and "stage profiles  skipped" in console, console[-3000:]
    done = latest_output(store, "ml-100k", "features")
    assert done is not None and done.fingerprint == fp  # same inputs: the same output, now committed
    assert done.manifest["row_counts"]["item_text"] > 0 and done.manifest["row_counts"]["user_text"] > 0
