"""Run registry, LATEST pointer, promotion, store lock (local and the local S3 server), `blast runs`,
and the pipeline end to end with its store on S3 (report included)."""

from __future__ import annotations

import argparse
import io
import json
import time

import pytest

from blast_ray.config import load_config
from blast_ray.pipeline import run_pipeline
from blast_ray.runs import LockHeld, StoreLock, get_latest, list_runs, promote
from blast_ray.runs.cli import runs_command
from blast_ray.store import ArtifactStore
from jobs.smoke import smoke_config


def _fake_run(store, run_id, status="succeeded", recall=0.1):
    """A run manifest as RunRecord writes it (registry tests need no stage to run)."""
    store.write_json({"run_id": run_id, "dataset": "d", "status": status, "started_at": run_id,
                      "metrics": {"train": {"valid.recall@20": recall}}, "stages": {}}, "d", "runs", run_id, "run.json")


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_registry_promote_and_lock(backend, tmp_path, request):
    root = str(tmp_path) if backend == "local" else request.getfixturevalue("s3_bucket") + "/blast"
    store = ArtifactStore(root)
    _fake_run(store, "20260101-000000-a", recall=0.10)
    _fake_run(store, "20260102-000000-b", recall=0.12)
    _fake_run(store, "20260103-000000-c", status="failed")
    assert [r["run_id"] for r in list_runs(store, "d")] == ["20260101-000000-a", "20260102-000000-b", "20260103-000000-c"]
    assert get_latest(store, "d") is None
    promote(store, "d", "20260101-000000-a")
    p = promote(store, "d", "20260102-000000-b")
    assert p["previous"] == "20260101-000000-a" and get_latest(store, "d")["run_id"] == "20260102-000000-b"
    assert get_latest(store, "d")["metrics"]["valid.recall@20"] == 0.12
    with pytest.raises(ValueError, match="only succeeded runs"):
        promote(store, "d", "20260103-000000-c")
    # The lock: a second holder is refused while the first lives; expiry lets a new owner take over.
    with StoreLock(store, "d", ttl_s=60, owner="first"):
        with pytest.raises(LockHeld, match="owner first"):
            StoreLock(store, "d", owner="second").acquire()
    StoreLock(store, "d", ttl_s=-1, owner="dead").acquire()  # already expired
    taker = StoreLock(store, "d", ttl_s=60, owner="taker").acquire()
    assert store.read_json("d", "runs", "LOCK.json")["owner"] == "taker"
    taker.release()
    assert not store.exists("d", "runs", "LOCK.json")


def test_runs_cli(tmp_path):
    store = ArtifactStore(str(tmp_path))
    _fake_run(store, "20260101-000000-a", recall=0.10)
    _fake_run(store, "20260102-000000-b", recall=0.125)
    ns = lambda action, *ids: argparse.Namespace(action=action, run_ids=list(ids), config=None, store=str(tmp_path), dataset="d")  # noqa: E731
    buf = io.StringIO()
    assert runs_command(ns("promote", "20260101-000000-a"), out=buf) == 0
    buf = io.StringIO()
    runs_command(ns("list"), out=buf)
    lines = buf.getvalue().splitlines()
    assert "0.1250" in lines[2] and lines[1].rstrip().endswith("*")  # latest marked
    buf = io.StringIO()
    runs_command(ns("compare", "20260101-000000-a", "20260102-000000-b"), out=buf)
    assert "valid.recall@20" in buf.getvalue() and "0.1000" in buf.getvalue()
    buf = io.StringIO()
    runs_command(ns("show", "20260102-000000-b"), out=buf)
    assert json.loads(buf.getvalue())["is_latest"] is False
    with pytest.raises(FileNotFoundError):
        runs_command(ns("show", "nope"), out=io.StringIO())


def test_pipeline_on_s3_store_end_to_end(s3_bucket, data_dir, tmp_path):
    """ETL and report (the cheap ends of the DAG) with every artifact on the local S3 server."""
    cfg = load_config(smoke_config(data_dir, s3_bucket + "/blast", tmp_path / "cfg.yaml"))
    t0 = time.time()
    res = run_pipeline(cfg, stages=("etl", "report"))
    assert res.ok, res.error
    store = ArtifactStore(s3_bucket + "/blast")
    (run,) = list_runs(store, "ml-100k")
    assert run["status"] == "succeeded" and run["stages"]["etl"]["status"] == "ran"
    assert run["stages"]["etl"]["row_counts"]["interactions"] > 90_000
    html = store.read_text("ml-100k", "runs", res.run_id, "report.html")
    assert res.manifests["report"]["extra"]["report_path"].startswith("s3://")
    # Real statistics from the ETL output, and honest "not run" sections for the rest.
    assert "user activity" in html and "<svg" in html
    assert "Training curves" in html and "not run" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # offline: no CDN
    # A second run skips the committed ETL output by manifest.
    res2 = run_pipeline(cfg, stages=("etl", "report"))
    assert res2.status["etl"] == "skipped" and res2.status["report"] == "ran"
    print(f"s3 pipeline: {time.time() - t0:.1f}s")
