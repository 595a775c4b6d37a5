"""`ray job submit` of jobs.pipeline to a real local head node (127.0.0.1), token auth on both sides."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from jobs.smoke import smoke_config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"dashboard on port {port} did not come up in {timeout}s")


def _submit(cmd, env, timeout):
    """`ray job submit`, retried while the head's job agent is still starting (HTTP 500 'No available agent')."""
    deadline = time.time() + 180  # a loaded 2-core box can take minutes to start the job agent
    while True:
        res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if "No available agent" not in res.stdout + res.stderr or time.time() > deadline:
            return res
        time.sleep(3)


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` with RAY_AUTH_MODE=token in its own temp dir (so other local
    ray.init() calls never discover it); terminating the blocking process stops its daemons."""
    token = secrets.token_hex(32)
    gcs_port, dash_port = _free_port(), _free_port()
    temp_dir = tempfile.mkdtemp(prefix="brj-", dir="/tmp")  # short: Ray's unix sockets live here
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
         "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
         f"--temp-dir={temp_dir}", "--object-store-memory=500000000",
         # every agent port explicit: the defaults (e.g. 52365) collide with other Ray instances on the box
         f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
         f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        _wait_http(dash_port, 60)
        yield {"address": f"http://127.0.0.1:{dash_port}", "env": env}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_ray_job_submit_pipeline_succeeds(ray_head, data_dir, tmp_path):
    store = tmp_path / "store"
    cfg = smoke_config(data_dir, str(store), tmp_path / "cfg.yaml", epochs=2)
    stages = "etl,report"  # small on purpose: the submit path is under test, not the stages
    runtime_env = {"excludes": [".venv*", "blast-data", "models-cache", ".git", "spark-warehouse", "*.parquet"],
                   "env_vars": {"BLAST_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}}
    env = ray_head["env"]
    # Without the token the job API refuses us: the head really runs with auth on.
    no_tok = {k: v for k, v in env.items() if k not in ("RAY_AUTH_TOKEN",)}
    no_tok["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "no-token")
    (tmp_path / "no-token").write_text("wrong-" + secrets.token_hex(16))
    refused = subprocess.run([str(BIN / "ray"), "job", "list", "--address", ray_head["address"]],
                             env=no_tok, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert refused.returncode != 0, refused.stdout
    t0 = time.time()
    res = _submit(
        [str(BIN / "ray"), "job", "submit", "--address", ray_head["address"], "--working-dir", ".",
         "--runtime-env-json", json.dumps(runtime_env), "--",
         "python", "-m", "jobs.pipeline", "--config", str(cfg), "--stages", stages],
        env, 600,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "succeeded" in out, out[-4000:]
    runs = list((store / "ml-100k" / "runs").iterdir())
    assert len(runs) == 1
    run = json.loads((runs[0] / "run.json").read_text())
    assert run["status"] == "succeeded"
    assert all(run["stages"][s]["status"] == "ran" for s in stages.split(","))
    html = (runs[0] / "report.html").read_text()
    assert "<svg" in html or "not run" in html
    print(f"submit of stages {stages} took {time.time() - t0:.1f}s")


def test_failed_job_exit_code_names_stage(ray_head, data_dir, tmp_path):
    """A stage that fails makes the submitted job (and `ray job submit`) fail, naming the stage."""
    cfg = smoke_config(data_dir, str(tmp_path / "store"), tmp_path / "cfg.yaml")
    text = cfg.read_text().replace(str(Path(data_dir) / "movielens-100k" / "ml-100k.inter"), str(tmp_path / "missing.inter"))
    cfg.write_text(text)
    first = "etl"
    res = _submit(
        [str(BIN / "ray"), "job", "submit", "--address", ray_head["address"], "--working-dir", ".",
         "--runtime-env-json", json.dumps({"excludes": [".venv*", "blast-data", "models-cache", ".git"]}), "--",
         "python", "-m", "jobs.pipeline", "--config", str(cfg), "--stages", first],
        ray_head["env"], 300,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert f"FAILED at stage '{first}'" in out, out[-3000:]
