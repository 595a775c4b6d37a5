"""Runs and locks that tell the truth (issue 14 item 3): heartbeats, abandoned runs, signals,
the nightly lock's renewal and safe takeover (real processes), and the CronJob's arguments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from blast_ray.config import PipelineConfig
from blast_ray.runs import LockHeld, RunRecord, StoreLock, effective_status, list_runs
from blast_ray.store import ArtifactStore, layout

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def py(code: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env={**ENV, **(env or {})}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(pred, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")




def _record_script(store: Path, run_id: str, via_main_wrapper: bool) -> str:
    body = f"""
        import argparse, sys, time
        from blast_ray.config import PipelineConfig
        from blast_ray.entry import main_wrapper
        from blast_ray.runs import RunRecord
        from blast_ray.store import ArtifactStore
        cfg = PipelineConfig.from_dict({{"dataset": {{"name": "ds"}}}})
        def body(args):
            rec = RunRecord.start(ArtifactStore({str(store)!r}), cfg, {run_id!r}, ("etl",))
            rec.begin_stage("etl")
            print("started", flush=True)
            time.sleep(120)
            return 0
    """
    body = textwrap.dedent(body)
    if via_main_wrapper:
        body += "\nsys.exit(main_wrapper(body, argparse.ArgumentParser(prog='job')))\n"
    else:
        body += "\nbody(None)\n"
    return body


def _record(store: Path, run_id: str) -> dict:
    return json.loads((store / "ds" / "runs" / run_id / "run.json").read_text())


def test_heartbeat_advances_and_stops_at_finish(tmp_path, monkeypatch):
    from blast_ray.config import PipelineConfig

    monkeypatch.setenv("BLAST_HEARTBEAT_S", "0.1")
    store = ArtifactStore(tmp_path)
    rec = RunRecord.start(store, PipelineConfig.from_dict({"dataset": {"name": "ds"}}), "r1", ("etl",))
    first = _record(tmp_path, "r1")["heartbeat_at"]
    wait_for(lambda: _record(tmp_path, "r1").get("heartbeat_at", 0) > first + 0.15, 5, "a heartbeat")
    rec.finish({"etl": "ran"})
    done = _record(tmp_path, "r1")
    time.sleep(0.4)
    assert _record(tmp_path, "r1") == done and done["status"] == "succeeded"


def test_sigkilled_run_shows_abandoned(tmp_path):
    env = {"BLAST_HEARTBEAT_S": "0.2"}
    proc = py(_record_script(tmp_path, "r-killed", via_main_wrapper=False), env=env)
    assert proc.stdout.readline().strip() == "started"
    before = _record(tmp_path, "r-killed")["heartbeat_at"]
    wait_for(lambda: _record(tmp_path, "r-killed")["heartbeat_at"] > before, 5, "a heartbeat from the live run")
    os.environ["BLAST_RUN_STALE_S"] = "1"
    try:
        store = ArtifactStore(tmp_path)
        assert effective_status(list_runs(store, "ds")[0]) == "running"  # alive: heartbeats are fresh
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(1.5)
        assert _record(tmp_path, "r-killed")["status"] == "running"  # the record itself could not say
        assert effective_status(list_runs(store, "ds")[0]) == "abandoned"
        for action in (["list"], ["show", "r-killed"]):
            res = subprocess.run([sys.executable, "-m", "blast_ray.cli", "runs", *action, "--store", str(tmp_path),
                                  "--dataset", "ds"], env={**ENV, "BLAST_RUN_STALE_S": "1"}, capture_output=True,
                                 text=True, timeout=60)
            assert res.returncode == 0 and "abandoned" in res.stdout, res.stdout + res.stderr
    finally:
        os.environ.pop("BLAST_RUN_STALE_S", None)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_marks_the_run_failed_naming_the_signal(tmp_path, sig, code):
    proc = py(_record_script(tmp_path, "r-sig", via_main_wrapper=True))
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    name = signal.Signals(sig).name
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"job: interrupted by {name}"), err
    rec = _record(tmp_path, "r-sig")
    assert rec["status"] == "failed" and rec["error"].startswith(f"interrupted by {name}")
    assert rec["failed_stage"] == "etl" and rec["stage_status"] == {"etl": "failed"}
    assert (tmp_path / "ds" / "runs" / "r-sig" / "run.log").exists()


# ---- the nightly lock --------------------------------------------------------------------------------
LOCKER = """
    import sys, time
    from blast_ray.runs import LockHeld, StoreLock
    from blast_ray.store import ArtifactStore
    root, ttl, renew, hold, start_at = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    while time.time() < start_at:
        pass
    lock = StoreLock(ArtifactStore(root), "ds", ttl_s=ttl, renew_every_s=renew)
    try:
        lock.acquire()
    except LockHeld as e:
        print("held", flush=True)
        sys.exit(3)
    print("got", lock.owner, flush=True)
    time.sleep(hold)
    print("renewals", lock.renewals, flush=True)
    lock.release()
"""


def _locker(root: Path, ttl: float, renew: float, hold: float, start_at: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(LOCKER), str(root), str(ttl), str(renew), str(hold),
                             str(start_at)], env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_stale_lock_is_taken_over_by_exactly_one_of_two_processes(tmp_path):
    store = ArtifactStore(tmp_path)
    for attempt in range(3):  # three races, each must have exactly one winner
        store.write_json({"owner": "dead-host:1:abc", "acquired_at": 0, "expires_at": time.time() - 10},
                         *layout.lock_parts("ds"))
        start_at = time.time() + 3  # both processes spin until the same instant
        procs = [_locker(tmp_path, 60, 30, 1.5, start_at) for _ in range(2)]
        outs = [p.communicate(timeout=60) for p in procs]
        got = [o for o, _ in outs if o.startswith("got")]
        held = [o for o, _ in outs if o.startswith("held")]
        assert len(got) == 1 and len(held) == 1, (attempt, outs)
        assert sorted(p.returncode for p in procs) == [0, 3]
        assert not store.exists(*layout.lock_parts("ds"))  # the winner released it


def test_lock_is_renewed_while_held_past_its_ttl(tmp_path):
    proc = _locker(tmp_path, ttl=1.0, renew=0.2, hold=3.0, start_at=0)
    assert proc.stdout.readline().startswith("got")
    time.sleep(2.0)  # twice the TTL: without renewal the lock would have expired by now
    held = json.loads((tmp_path / "ds" / "runs" / "LOCK.json").read_text())
    assert held["expires_at"] > time.time() and held.get("renewed_at")
    with pytest.raises(LockHeld):
        StoreLock(ArtifactStore(tmp_path), "ds", ttl_s=60).acquire()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert int(out.split("renewals")[1]) >= 5


def test_a_killed_holder_loses_the_lock_after_its_ttl(tmp_path):
    proc = _locker(tmp_path, ttl=1.0, renew=0.2, hold=60, start_at=0)
    assert proc.stdout.readline().startswith("got")
    proc.kill()
    proc.wait(timeout=10)
    with pytest.raises(LockHeld):  # its last renewal is still valid
        StoreLock(ArtifactStore(tmp_path), "ds", ttl_s=60).acquire()
    time.sleep(1.3)
    lock = StoreLock(ArtifactStore(tmp_path), "ds", ttl_s=60).acquire()
    lock.release()


# ---- the CronJob's arguments and S3 inboxes ------------------------------------------------------------
def _cronjob_job_args() -> list[str]:
    doc = yaml.safe_load((ROOT / "infra" / "k8s" / "cronjob-nightly.yaml").read_text())
    (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    cmd = container["command"] + container.get("args", [])
    i = cmd.index("jobs.nightly")
    assert cmd[i - 2:i] == ["python", "-m"]
    return cmd[i + 1:]


def test_cronjob_arguments_pass_the_nightly_parser_and_validate():
    from blast_ray.jobs.nightly import NightlyConfig, build_parser

    args = build_parser().parse_args(_cronjob_job_args())
    assert (ROOT / args.config).is_file()
    ncfg = NightlyConfig(args.inbox, args.work_dir, args.metric, args.tolerance).validate()
    assert ncfg.inbox.startswith("s3://") and args.store.startswith("s3://")


def test_nightly_validate_refuses_bad_inboxes(tmp_path):
    from blast_ray.config import ConfigError
    from blast_ray.jobs.nightly import NightlyConfig

    for bad in ("s3://", "gs://bucket/inbox", str(tmp_path / "missing")):
        with pytest.raises(ConfigError, match="nightly.inbox"):
            NightlyConfig(bad).validate()


def test_s3_inbox_is_fetched_into_the_work_dir(s3_bucket, tmp_path):
    from blast_ray.jobs.nightly import fetch_inbox, inbox_files

    src = ArtifactStore(s3_bucket + "/inbox/beauty")
    src.write_bytes(b'{"a": 1}\n', "2018-09-01.json")
    src.write_bytes(b'{"a": 2}\n', "2018-09-02.json")
    local = fetch_inbox(s3_bucket + "/inbox/beauty", str(tmp_path / "work"), "beauty")
    assert sorted(os.listdir(local)) == ["2018-09-01.json", "2018-09-02.json"]
    assert Path(local, "2018-09-02.json").read_bytes() == b'{"a": 2}\n'
    first = inbox_files(local)
    src.delete_file("2018-09-01.json")
    src.write_bytes(b'{"a": 3}\n', "2018-09-03.json")
    local = fetch_inbox(s3_bucket + "/inbox/beauty", str(tmp_path / "work"), "beauty")
    now = inbox_files(local)
    assert sorted(now) == ["2018-09-02.json", "2018-09-03.json"] and now["2018-09-02.json"] == first["2018-09-02.json"]
