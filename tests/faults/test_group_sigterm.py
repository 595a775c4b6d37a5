"""Fault: SIGTERM to the whole process group during a Ray stage (what `timeout` without
--foreground and a shell's job control send). The local Ray cluster's processes (GCS, raylet,
agents) share the driver's process group and get the signal too; the driver's handler
(``entry.install_signal_handlers``, given back after ``ray.init`` by ``runtime.ensure_ray``) must
still record the run ``failed`` naming the signal (not ``abandoned``), print one line and exit 143,
and no Ray process may outlive it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import group_members

ROOT = Path(__file__).resolve().parent.parent.parent


def _cache_batches(store: Path) -> int:
    return len([p for p in (store / "ml-100k" / "cache" / "profiles").rglob("part-*.parquet") if "requests" not in p.parts])


def _run_record(store: Path, since: float) -> dict | None:
    """The newest run record written after ``since`` (the session store holds other tests' runs)."""
    runs = [p for p in (store / "ml-100k" / "runs").glob("*/run.json") if p.stat().st_mtime >= since]
    return json.loads(max(runs, key=lambda p: p.stat().st_mtime).read_text()) if runs else None


# Ray 2.60's core worker can die on its own when the group signal kills gcs_server under an
# in-flight RPC: a RAY_CHECK in NodeResourceInfoAccessor::AsyncGetDrainingNodes ("RPC error:
# CANCELLED") ends the driver with status 1 before or while its handler records the run (seen once
# in a full `make test`, never in isolation). An upstream race, not the handling under test: that
# exact signature is tried once more on a fresh store; anything else fails at once. A second
# signature of the same race (seen once, in a full `make test` on a machine also running a
# benchmark): the handler printed its line, then the core worker, retrying a task's error push to
# the dead GCS ("Failed to push error to driver"), ended the process with status 1.
RAY_SHUTDOWN_RACES = ("AsyncGetDrainingNodes", "Failed to push error to driver")


def _interrupt_profiles(data_dir, store: Path, cfg_path: Path):
    """Start `blast profiles` on ``store`` in its own process group, SIGTERM the group well inside
    the Ray stage: (the finished process, its stderr, the Ray daemons' pids, the start time)."""
    from jobs.smoke import smoke_config

    # one profile a batch: the stage lasts long enough (about a minute) to be hit well inside it
    cfg = smoke_config(data_dir, str(store), cfg_path, profiles={"engine": "template", "batch_size": 1})
    t0 = time.time() - 1
    # BLAST_HEARTBEAT_S: the record notes the running stage at its next heartbeat (default 30 s); the
    # profiles stage takes about 18 s on an idle machine, so beat often enough for the wait below
    env = dict(os.environ, PYTHONPATH=str(ROOT), BLAST_RAY_OBJECT_STORE_BYTES=str(256 << 20), BLAST_HEARTBEAT_S="0.5")
    proc = subprocess.Popen([sys.executable, "-m", "blast_ray.cli", "profiles", "--config", str(cfg)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as under `timeout`
    try:
        deadline = time.time() + 420
        ray_up = False
        while time.time() < deadline and proc.poll() is None:
            rec = _run_record(store, t0)
            members = group_members(proc.pid)
            # the cluster is up and the driver well past ray.init (its SIGTERM handler restored: a
            # signal inside ray.init is still Ray's, see RELIABILITY): the stage has written its first
            # profile batches to the store's cache
            ray_up = ("raylet" in members.values() and "gcs_server" in members.values()
                      and _cache_batches(store) >= 1)
            if ray_up and rec and rec.get("current_stage") == "profiles":
                break
            time.sleep(0.5)
        assert proc.poll() is None and ray_up, f"no Ray stage to interrupt: {proc.communicate(timeout=60)}"
        time.sleep(2)  # well inside the stage
        ray_pids = {p for p, c in group_members(proc.pid).items() if c in ("raylet", "gcs_server")}
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc, err, ray_pids, t0


@pytest.mark.faults
def test_group_sigterm_during_a_ray_stage_records_failed(ml100k_store, data_dir, tmp_path):
    import shutil

    pristine = tmp_path / "pristine"
    shutil.copytree(ml100k_store, pristine)  # the committed ETL only: a second try starts as the first
    proc, err, ray_pids, t0 = _interrupt_profiles(data_dir, ml100k_store, tmp_path / "cfg.yaml")
    if proc.returncode != 143 and any(race in err for race in RAY_SHUTDOWN_RACES):
        ml100k_store = tmp_path / "second-try"
        shutil.copytree(pristine, ml100k_store)
        proc, err, ray_pids, t0 = _interrupt_profiles(data_dir, ml100k_store, tmp_path / "cfg2.yaml")
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "*** SIGTERM received ***" not in err, err[-3000:]
    assert [ln for ln in err.splitlines() if ln.startswith("blast:")][-1].startswith("blast: interrupted by SIGTERM"), err
    rec = _run_record(ml100k_store, t0)
    assert rec["status"] == "failed" and rec["error"].startswith("interrupted by SIGTERM"), rec
    assert rec["failed_stage"] == "profiles"
    # the cluster went with the driver: no raylet / GCS left behind
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() and group_members(proc.pid).get(p) for p in ray_pids):
        time.sleep(0.5)
    assert not [p for p in ray_pids if group_members(proc.pid).get(p)], "Ray processes outlived the driver"
