"""`ray job submit` of jobs.pipeline to a real local head node (127.0.0.1), token auth on both sides:
the whole DAG (etl..report) with its store on the local S3 server (credentials and endpoint passed
to the job as runtime-env env vars, as production does), and a failing stage named in the exit."""

from __future__ import annotations

import json
import os
import secrets
import signal
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
        # The head and its daemons share this process group (start_new_session): SIGTERM them all at
        # once (one by one, through `ray start --block`, took 30 s under load), then SIGKILL whatever
        # of that group is left, so no daemon of this head outlives the tests.
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def test_ray_job_submit_pipeline_succeeds(ray_head, data_dir, tmp_path, s3_bucket):
    """Every stage of the DAG as one submitted job, every artifact on the local S3 server."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from blast_ray.config import STAGES, load_config
    from blast_ray.pipeline import STAGE_SPECS, run_pipeline
    from blast_ray.runs import list_runs
    from blast_ray.store import ArtifactStore
    from blast_ray.train.warm_start import read_model_file

    root = s3_bucket + "/blast"
    # ml-100k, 2 epochs; evaluate's extra trained baselines off (the evaluate tests cover them); the
    # smoke config's 2-thread text encoder and 3 titles per user profile
    cfg = smoke_config(data_dir, str(tmp_path / "unused-local-store"), tmp_path / "cfg.yaml", epochs=2,
                       etl={"shuffle_partitions": 2}, evaluate={"baselines": ["pop"]}, recommend={"top_k": 10})
    runtime_env = {"excludes": [".venv*", "blast-data", "models-cache", ".git", "spark-warehouse", "*.parquet"],
                   "env_vars": {"BLAST_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1",
                                **{k: os.environ[k] for k in AWS_ENV}}}  # set by the s3_server fixture
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
         "python", "-m", "jobs.pipeline", "--config", str(cfg), "--store", root],
        env, 900,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "succeeded" in out, out[-4000:]
    t_job = time.time() - t0
    assert not (tmp_path / "unused-local-store").exists()  # --store won: nothing went to local disk

    # Everything below reads the S3 server from this process, not from the job.
    store = ArtifactStore(root)
    (run,) = list_runs(store, "ml-100k")
    assert run["status"] == "succeeded", run.get("error")
    assert {s: run["stages"][s]["status"] for s in STAGES} == {s: "ran" for s in STAGES}
    for s in STAGES:  # every cached stage committed its manifest on S3
        if STAGE_SPECS[s].cached:
            uri = run["stages"][s]["uri"]
            assert uri.startswith(root + "/ml-100k/stages/" + s + "/")
            assert ArtifactStore(uri).read_json("_MANIFEST.json")["stage"] == s
    assert run["stages"]["etl"]["row_counts"]["interactions"] > 90_000
    assert run["metrics"]["train"]["test.recall@20"] > 0
    html = store.read_text("ml-100k", "runs", run["run_id"], "report.html")
    assert "<svg" in html and "Training curves" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # offline: no CDN
    # Recommendations with a plain pyarrow S3FileSystem (what a serving job would use).
    fs = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], access_key=os.environ["AWS_ACCESS_KEY_ID"],
                           secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], region=os.environ["AWS_DEFAULT_REGION"])
    rec_path = run["stages"]["recommend"]["uri"].removeprefix("s3://") + "/recommendations"
    recs = pq.read_table(rec_path, filesystem=fs).to_pandas()
    n_users = run["stages"]["etl"]["row_counts"]["users"]
    assert len(recs) == n_users * 10 and recs["user_idx"].nunique() == n_users
    assert not recs.duplicated(["user_idx", "item_idx"]).any()
    # The promoted-model file a nightly warm start reads, through the ArtifactStore on S3.
    saved = read_model_file(run["stages"]["train"]["uri"])
    assert saved["n_users"] == n_users and saved["config"]["model"] == "blast"
    # A second run against the same S3 store skips the committed ETL by manifest; the report re-runs.
    local_cfg = load_config(cfg)
    local_cfg.store = root
    res2 = run_pipeline(local_cfg, stages=("etl", "report"))
    assert res2.ok, res2.error
    assert res2.status["etl"] == "skipped" and res2.status["report"] == "ran"
    assert res2.manifests["report"]["extra"]["report_path"].startswith("s3://")
    stage_s = {s: run["stages"][s]["timings"].get("total_s") for s in STAGES}
    print(f"submit of the whole DAG on S3 took {t_job:.1f}s; stage seconds {stage_s}")


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
