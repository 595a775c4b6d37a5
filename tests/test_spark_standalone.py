"""infra/spark-submit.sh against a real standalone Spark cluster, as a new user would run it.

The test starts a master and a worker itself with ``spark-class`` (bound to 127.0.0.1, worker
1 core / 1 GiB), runs ``SPARK_MASTER=spark://127.0.0.1:PORT infra/spark-submit.sh configs/ml-100k.yaml
STORE`` on the real MovieLens-100k (the shipped config, copied next to a ``../blast-data/raw/ml-100k``
folder holding the shared data files, as ``blast datasets get`` lays them out), checks that the
ETL ran on the worker's executor, compares the counts with the local-mode ETL of the same data and
config (``ml100k_etl_store``), and stops the master and worker it started (only those: their own
process groups).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[1]} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"no {text!r} in {log} after {timeout} s: {log.read_text(errors='replace')[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group this test started (the JVM and, for the worker, its executors)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture()
def standalone_cluster(tmp_path):
    """(master URL, worker work dir): a standalone master and one worker (1 core, 1 GiB) on 127.0.0.1."""
    home = _spark_home()
    env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1",
           "SPARK_LOG_DIR": str(tmp_path / "logs"), "SPARK_DAEMON_MEMORY": "256m"}
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    work = tmp_path / "work"
    procs: list[subprocess.Popen] = []
    try:
        mlog = tmp_path / "master.log"
        master = subprocess.Popen(
            [f"{home}/bin/spark-class", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(port), "--webui-port", str(_free_port())],
            env=env, stdout=open(mlog, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(master)
        _wait_for(mlog, "I have been elected leader", master, 120)
        wlog = tmp_path / "worker.log"
        worker = subprocess.Popen(
            [f"{home}/bin/spark-class", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
             "--cores", "1", "--memory", "1g", "--webui-port", str(_free_port()), "--work-dir", str(work), url],
            env=env, stdout=open(wlog, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(worker)
        _wait_for(wlog, "Successfully registered with master", worker, 120)
        yield url, work
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.mark.slow
def test_spark_submit_on_a_standalone_cluster_matches_local_mode(standalone_cluster, ml100k_etl_store, data_dir, tmp_path):
    from blast_ray.store import ArtifactStore, latest_output

    url, work = standalone_cluster
    # the shipped config, next to ../blast-data/raw/ml-100k as `blast datasets get` lays the files out
    cfg_dir = tmp_path / "project" / "configs"
    cfg_dir.mkdir(parents=True)
    shutil.copy(ROOT / "configs" / "ml-100k.yaml", cfg_dir / "ml-100k.yaml")
    raw = tmp_path / "project" / "blast-data" / "raw" / "ml-100k"
    raw.mkdir(parents=True)
    for name in ("ml-100k.inter", "ml-100k.item", "ml-100k.user"):
        os.symlink(data_dir / "movielens-100k" / name, raw / name)
    store = tmp_path / "store"
    venv_bin = os.path.dirname(sys.executable)
    env = {**os.environ, "SPARK_MASTER": url, "SPARK_HOME": _spark_home(), "SPARK_LOCAL_IP": "127.0.0.1",
           "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}", "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_DRIVER_MEMORY": "1g", "SPARK_EXECUTOR_MEMORY": "900m",
           "SPARK_EXTRA_ARGS": "--conf spark.ui.enabled=false --conf spark.driver.host=127.0.0.1 "
                               "--conf spark.driver.bindAddress=127.0.0.1 --conf spark.sql.shuffle.partitions=4",
           "TMPDIR": str(tmp_path)}
    before = {p.name for p in tmp_path.iterdir()}
    t0 = time.time()
    proc = subprocess.run([str(ROOT / "infra" / "spark-submit.sh"), str(cfg_dir / "ml-100k.yaml"), str(store)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=840)
    wall = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "etl ran:" in proc.stdout, proc.stdout
    # the per-run package folder (mktemp under TMPDIR) is gone after the run
    assert not [p for p in tmp_path.iterdir() if p.name not in before and p.name.startswith("blast-ray-pkg.")]
    # the work ran on the worker's executor: the worker made an app folder with an executor's logs
    apps = sorted(work.glob("app-*/*/stderr"))
    assert apps, f"no executor ran on the worker ({list(work.glob('*'))})"
    cluster = latest_output(ArtifactStore(store), "ml-100k", "etl").manifest["row_counts"]
    local = latest_output(ArtifactStore(ml100k_etl_store), "ml-100k", "etl").manifest["row_counts"]
    assert cluster == local, (cluster, local)
    assert cluster["interactions"] > 90_000 and cluster["users"] == 943
    print(f"standalone spark-submit ETL: {wall:.1f} s, {cluster['interactions']} interactions")
