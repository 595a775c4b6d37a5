"""Fault: the S3 server (moto's standalone server, a real S3-speaking HTTP server) is stopped while
the profiles stage writes its per-batch results to an ``s3://`` store.

The run (``python -m blast_ray.cli run --store s3://...`` in a subprocess) must fail with exit
code 1 and ONE console line naming the store URL and the cause, without a traceback; nothing is
committed for the stage. The server is restarted (moto keeps nothing: the bucket comes back empty,
the ETL output is put back) and the same command completes.

The ETL output is the session's committed MovieLens-100k ETL (``ml100k_etl_store``) copied into
the bucket: the run skips ETL by manifest, so no Spark job talks to S3 here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "faults"
PREFIX = "blast"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto(port: int) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("moto_server did not start")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def _client(url: str):
    import boto3

    return boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")


def _put_etl(s3, local_store: Path) -> int:
    """Create the bucket and copy the committed local ETL output under s3://BUCKET/PREFIX/."""
    s3.create_bucket(Bucket=BUCKET)
    n = 0
    for f in (local_store / "ml-100k" / "stages" / "etl").rglob("*"):
        if f.is_file():
            s3.upload_file(str(f), BUCKET, f"{PREFIX}/{f.relative_to(local_store).as_posix()}")
            n += 1
    return n


def _keys(s3, prefix: str) -> list[str]:
    resp = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{prefix}")
    return [o["Key"] for o in resp.get("Contents", [])]


def test_s3_server_stopped_mid_stage_one_line_then_rerun_completes(ml100k_etl_store, data_dir, tmp_path):
    from jobs.smoke import smoke_config

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", AWS_ENDPOINT_URL=url,
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    store = f"s3://{BUCKET}/{PREFIX}"
    cfg = smoke_config(data_dir, store, tmp_path / "cfg.yaml")
    # one profile a batch (one S3 object each) for the first 120 items and 80 users: written for
    # seconds, so the server is stopped mid-stage
    cmd = [sys.executable, "-m", "blast_ray.cli", "run", "--config", str(cfg), "--store", store,
           "--stages", "etl,profiles", "--set", "profiles.batch_size=1", "--set", "profiles.sample_items=120",
           "--set", "profiles.sample_users=80",
           "--set", "profiles.request_builder=spark"]  # the S3 staging path of the Spark builder
    moto = _start_moto(port)
    try:
        assert _put_etl(_client(url), ml100k_etl_store) > 0
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        s3 = _client(url)
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None and not _keys(s3, "ml-100k/cache/profiles/item/"):
            time.sleep(0.2)
        writing = proc.poll() is None and bool(_keys(s3, "ml-100k/cache/profiles/item/"))
        committed_before = _keys(s3, "ml-100k/stages/profiles/")
        _stop(moto)  # the fault: the S3 server goes away while the stage writes
        try:
            stdout, stderr = proc.communicate(timeout=400)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
        assert writing, f"the profiles stage never wrote to S3:\n{stderr[-3000:]}"
        assert not [k for k in committed_before if k.endswith("_MANIFEST.json")]
        console = [ln for ln in (stdout + stderr).splitlines() if ln.strip()]
        errors = [ln for ln in console if ln.startswith("blast:") or "error" in ln.lower()]
        print("console after the stop:\n" + "\n".join(console[-10:]))
        assert proc.returncode == 1, "\n".join(console[-20:])
        assert "Traceback" not in stdout + stderr, (stdout + stderr)[-3000:]
        assert len(errors) == 1, errors
        line = errors[0]
        # blast: stage 'profiles' failed: Ray task MapWorker(MapBatches(ProfileWorker)): S3 endpoint
        # http://127.0.0.1:PORT unreachable for s3://faults/blast: is the server running ... (cause: ...)
        assert line.startswith("blast: stage 'profiles' failed:"), line
        assert f"S3 endpoint {url} unreachable for {store}" in line and "(cause: " in line, line
        assert not any("stage profiles  done" in ln for ln in console)

        moto = _start_moto(port)  # in-memory: the bucket and everything in it are gone
        s3 = _client(url)
        _put_etl(s3, ml100k_etl_store)
        res = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        manifests = [k for k in _keys(s3, "ml-100k/stages/profiles/") if k.endswith("_MANIFEST.json")]
        assert len(manifests) == 1
        rows = json.loads(s3.get_object(Bucket=BUCKET, Key=manifests[0])["Body"].read())["row_counts"]
        assert rows == {"profiles": 200, "item_profiles": 120, "user_profiles": 80}
    finally:
        _stop(moto)


def test_one_line_reads_a_ray_data_udf_failure_from_the_task_traceback():
    """Ray Data wraps a UDF's exception in UserCodeException; its __cause__ does not cross the
    process boundary, so the cause is read from the task's traceback text."""
    import ray.exceptions

    from blast_ray.errors import one_line

    text = (
        "\x1b[36mray::MapWorker(MapBatches(ProfileWorker)).submit()\x1b[39m (pid=1, ip=127.0.0.1)\n"
        "OSError: When uploading part: AWS Error NETWORK_CONNECTION during PutObject operation\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "\x1b[36mray::MapWorker(MapBatches(ProfileWorker)).submit()\x1b[39m (pid=1, ip=127.0.0.1)\n"
        '  File "blast_ray/profiles/pipeline.py", line 1, in __call__\n'
        "blast_ray.store.artifact_store.StoreUnavailable: S3 endpoint http://127.0.0.1:9 unreachable for "
        "s3://b/p: is the server running and AWS_ENDPOINT_URL right? (cause: Could not connect to server)\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "\x1b[36mray::MapWorker(MapBatches(ProfileWorker)).submit()\x1b[39m (pid=1, ip=127.0.0.1)\n"
        "ray.exceptions.UserCodeException: UDF failed to process a data block.\n"
        "Failed to apply UDF transform after 1/1 attempts (total backoff 0.0s).\n")
    err = ray.exceptions.RayTaskError(None, text, ray.exceptions.UserCodeException("UDF failed")).as_instanceof_cause()
    assert one_line(err) == ("Ray task MapWorker(MapBatches(ProfileWorker)): S3 endpoint http://127.0.0.1:9 "
                             "unreachable for s3://b/p: is the server running and AWS_ENDPOINT_URL right? "
                             "(cause: Could not connect to server)")
    plain = text.replace("blast_ray.store.artifact_store.StoreUnavailable: S3 endpoint", "ValueError: S3 endpoint")
    err = ray.exceptions.RayTaskError(None, plain, ray.exceptions.UserCodeException("UDF failed")).as_instanceof_cause()
    assert one_line(err).startswith("Ray task MapWorker(MapBatches(ProfileWorker)): ValueError: S3 endpoint")
