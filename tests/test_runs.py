"""Run registry, LATEST pointer, promotion, store lock (local and the local S3 server), `blast runs`.
(The pipeline end to end with its store on S3, every stage and the report, is the submitted job of
tests/test_jobs_submit.py.)"""

from __future__ import annotations

import argparse
import io
import json

import pytest

from blast_ray.runs import LockHeld, StoreLock, get_latest, list_runs, promote
from blast_ray.runs_cli import runs_command
from blast_ray.store import ArtifactStore


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
    ns = lambda action, *ids, as_json=False: argparse.Namespace(  # noqa: E731
        action=action, run_ids=list(ids), config=None, store=str(tmp_path), dataset="d", json=as_json)
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
    runs_command(ns("show", "20260102-000000-b", as_json=True), out=buf)
    assert json.loads(buf.getvalue())["is_latest"] is False
    buf = io.StringIO()  # the summary for people: metrics first
    runs_command(ns("show", "20260101-000000-a"), out=buf)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("run 20260101-000000-a  succeeded  (latest)")
    assert any(line.startswith("recall@20") and "0.1000" in line for line in lines[:6])
    with pytest.raises(FileNotFoundError):
        runs_command(ns("show", "nope"), out=io.StringIO())


def test_run_log_uploaded_next_to_run_json(tmp_path, data_dir):
    """Every run writes its full log (DEBUG under the entry points' logging) as run.log beside run.json,
    whether it finishes or fails; the temp file and the root handler are gone afterwards."""
    import logging

    from blast_ray.config import load_config
    from blast_ray.entry import setup_logging
    from blast_ray.runs import RunRecord
    from jobs.smoke import smoke_config

    setup_logging(0)
    cfg = load_config(smoke_config(data_dir, str(tmp_path / "store"), tmp_path / "cfg.yaml"))
    store = ArtifactStore(cfg.store)
    root_handlers = list(logging.getLogger().handlers)
    for run_id, failed in (("r-ok", None), ("r-failed", "train")):
        rec = RunRecord.start(store, cfg, run_id, ("etl",))
        logging.getLogger("blast_ray.test").debug("a debug detail of %s", run_id)
        logging.getLogger("py4j").info("third-party chatter")  # WARNING and up only
        rec.finish({"etl": "ran"}, failed=failed, error="boom" if failed else None)
        log_text = store.read_text("ml-100k", "runs", run_id, "run.log")
        assert "DEBUG" in log_text and f"a debug detail of {run_id}" in log_text
        assert "third-party chatter" not in log_text
        assert store.exists("ml-100k", "runs", run_id, "run.json")
    assert logging.getLogger().handlers == root_handlers
