"""Infra manifests parse and carry the fields their tools require; node types match the stages' requests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from blast_ray.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_ray_cluster_yaml_node_types_cover_stage_requests():
    c = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "head_node_type", "available_node_types", "max_workers"):
        assert key in c, key
    assert c["provider"]["type"] == "aws"
    types = c["available_node_types"]
    assert c["head_node_type"] in types
    gpu = [n for n, t in types.items() if t["resources"].get("GPU", 0) >= 1]
    cpu = [n for n, t in types.items() if n != c["head_node_type"] and t["resources"].get("CPU", 0) >= 4 and not t["resources"].get("GPU")]
    assert gpu and cpu, "need a GPU group (vLLM profiles, training) and a CPU group (ETL, graphs, Sinkhorn)"
    for name, t in types.items():
        if name != c["head_node_type"]:
            assert t["min_workers"] <= t["max_workers"] <= c["max_workers"], name
        assert "InstanceType" in t["node_config"], name
    # Every resource a shipped config can ask for exists on some node type.
    offered = {r for t in types.values() for r, v in t["resources"].items() if v}
    for cfg_path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(cfg_path)
        if cfg.profiles.num_gpus_per_actor or cfg.train.use_gpu:
            assert "GPU" in offered, cfg_path
        gpu_cpus = max(types[n]["resources"]["CPU"] for n in gpu)
        assert cfg.train.num_workers <= 1 + sum(types[n]["max_workers"] for n in gpu + cpu), cfg_path
        assert gpu_cpus >= 1
    assert any(r.startswith("accelerator_type:") for r in offered)


def _load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_kuberay_rayjob_manifest():
    (job,) = _load_all(ROOT / "infra" / "k8s" / "rayjob-pipeline.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert "jobs.pipeline" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert {"cpu", "gpu"} <= set(groups)
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == 1
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        env = {e["name"] for e in g["template"]["spec"]["containers"][0]["env"]}
        assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= env  # auth must match on every node


def test_nightly_cronjob_manifest():
    (cj,) = _load_all(ROOT / "infra" / "k8s" / "cronjob-nightly.yaml")
    assert cj["apiVersion"] == "batch/v1" and cj["kind"] == "CronJob"
    assert len(cj["spec"]["schedule"].split()) == 5
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert "jobs.nightly" in pod["containers"][0]["command"]


def test_dockerfile_and_spark_wrapper():
    lines = (ROOT / "infra" / "Dockerfile").read_text().splitlines()
    assert lines[[l.strip() != "" and not l.startswith("#") for l in lines].index(True)].startswith("FROM ")
    for line in lines:
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                if not src.startswith("--"):
                    assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    sh = ROOT / "infra" / "spark-submit.sh"
    assert subprocess.run(["bash", "-n", str(sh)]).returncode == 0
    assert (ROOT / "spark" / "etl_job.py").exists()
    res = subprocess.run(["bash", str(sh)], capture_output=True, text=True)
    assert res.returncode != 0 and "usage" in res.stderr
