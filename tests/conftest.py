"""Shared fixtures. Datasets come from ONE place: ../shared/data, or $BLAST_DATA_DIR.

A missing dataset is an error, never a skip: CI always has them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from blast_ray.config import shared_data_dir

    d = shared_data_dir()
    if not d.is_dir():
        pytest.fail(f"shared datasets not found at {d}; set BLAST_DATA_DIR to the shared/data folder")
    return d


@pytest.fixture(scope="session")
def dataset(data_dir):
    """dataset('amazon-baby-5core') -> its folder, failing loudly when missing."""

    def get(name: str) -> Path:
        p = data_dir / name
        if not p.exists():
            pytest.fail(f"dataset {name} missing under {data_dir}")
        return p

    return get


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-speaking HTTP server (moto's standalone server) on 127.0.0.1.

    Yields the endpoint URL; sets the standard AWS env vars for the session's store code.
    """
    port = _free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture()
def s3_bucket(s3_server):
    """A fresh bucket on the local S3 server; yields 's3://<bucket>'."""
    import uuid

    import boto3

    name = f"blast-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance sized like CI (2 CPUs), shared by the session's tests."""
    from blast_ray.runtime import ensure_ray

    yield ensure_ray(num_cpus=2)


@pytest.fixture(scope="session")
def ml100k_etl_store(tmp_path_factory, data_dir) -> Path:
    """A local store holding the committed ETL output of the real MovieLens-100k under the smoke
    config (jobs.smoke.smoke_config): run once per session, ~25 s of Spark. Do not write into it;
    use ``ml100k_store`` for a private copy."""
    from blast_ray.config import load_config
    from blast_ray.pipeline import run_pipeline
    from jobs.smoke import smoke_config

    root = tmp_path_factory.mktemp("ml100k-etl")
    cfg = load_config(smoke_config(data_dir, str(root / "store"), root / "cfg.yaml"))
    res = run_pipeline(cfg, stages=("etl",))
    assert res.ok, res.error
    return root / "store"


@pytest.fixture(scope="session")
def ml100k_features_store(tmp_path_factory, ml100k_etl_store, data_dir, ray_local) -> Path:
    """A local store holding the committed etl, profiles and features outputs of the real
    MovieLens-100k under the smoke config: the MiniLM encoding (~60 s on 2 CPUs) runs once per
    session. Do not write into it; use ``ml100k_features_copy`` for a private copy."""
    import shutil

    from blast_ray.config import load_config
    from blast_ray.pipeline import run_pipeline
    from jobs.smoke import smoke_config

    root = tmp_path_factory.mktemp("ml100k-features")
    shutil.copytree(ml100k_etl_store / "ml-100k", root / "store" / "ml-100k")
    cfg = load_config(smoke_config(data_dir, str(root / "store"), root / "cfg.yaml"))
    res = run_pipeline(cfg, stages=("etl", "profiles", "features"))
    assert res.ok and res.status["etl"] == "skipped", (res.error, res.status)
    return root / "store"


@pytest.fixture()
def ml100k_features_copy(ml100k_features_store, tmp_path) -> Path:
    """A private copy of ``ml100k_features_store`` (etl, profiles and features committed; a smoke
    config run against it skips them by manifest)."""
    import shutil

    dst = tmp_path / "store"
    shutil.copytree(ml100k_features_store / "ml-100k", dst / "ml-100k")
    return dst


@pytest.fixture()
def ml100k_store(ml100k_etl_store, tmp_path) -> Path:
    """A private copy of ``ml100k_etl_store``: a pipeline with the smoke config's dataset/etl sections
    run against it skips ETL by manifest (same fingerprint) instead of re-running Spark."""
    import shutil

    dst = tmp_path / "store"
    shutil.copytree(ml100k_etl_store / "ml-100k" / "stages", dst / "ml-100k" / "stages")
    return dst
