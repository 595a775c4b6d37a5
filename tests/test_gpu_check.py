"""benchmarks/gpu_check.py end to end on this CPU (issue 12 item 8): ``--prepare`` a real Baby slice
into a tmp folder, then ``--device cpu --quick`` in a subprocess where ray, pyspark, pydantic, faiss,
tqdm and yaml do not import (the device machine has only torch + numpy/scipy/pandas/pyarrow): the
project's real training core must import and run there, and the RESULT line must say so.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = PROJECT_ROOT / "benchmarks" / "gpu_check.py"
BLOCKED = ("ray", "pyspark", "pydantic", "faiss", "tqdm", "yaml")

# sys.modules[name] = None: `import name` raises ImportError, importlib.util.find_spec(name) says
# "absent" (torch probes optional modules that way, so a finder that raises would break torch).
RUN_BLOCKED = r'''
import runpy, sys
blocked = sys.argv[1].split(",")
for m in blocked:
    sys.modules[m] = None
for m in blocked:
    try:
        __import__(m)
    except ImportError:
        pass
    else:
        raise SystemExit(f"the blocker did not block {m}")
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def _run(args, env, cwd, timeout=900):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def _line(out: str, tag: str) -> dict:
    line = next(ln for ln in out.splitlines() if ln.startswith(tag + " "))
    return json.loads(line[len(tag) + 1:])


def test_gpu_check_quick_on_cpu_without_ray_spark_pydantic(dataset, tmp_path):
    folder = tmp_path / "gpu_data"
    data_dir = dataset("amazon-baby-5core").parent
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1")
    prep = _line(_run([str(SCRIPT), "--prepare", "--data", str(folder), "--data-dir", str(data_dir),
                       "--max-users", "2000", "--ref-epochs", "1"], env, tmp_path), "PREPARED")
    assert prep["n_users"] == 2000 and prep["augmented"] > 0
    assert prep["bytes"] < 50 * 2**20
    # The device side: no PYTHONPATH (the script puts its project root on sys.path itself).
    env_dev = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    out = _run(["-c", RUN_BLOCKED, ",".join(BLOCKED), str(SCRIPT), "--data", str(folder), "--device", "cpu", "--quick"],
               env_dev, tmp_path)
    res = _line(out, "RESULT")
    assert res["loaded"] == [], res["loaded"]
    assert res["ok"] is True, res["checks"]
    assert res["seed"] == 2024 and res["device"] == "cpu"
    for model in ("lightgcn", "blast"):
        m = res[model]
        assert len(m["losses"]) == 2 and len(m["cpu_losses"]) == 1
        # Same process, same device: bit-identical; the stored reference was computed by this very torch.
        assert m["loss_rel_diff_cpu"] == 0.0
        assert m["loss_rel_diff_reference"] is not None and m["loss_rel_diff_reference"] < 1e-6
        assert 0.0 < m["losses"][0] < 1.0 and m["epoch_s"] > 0 and m["rank_s"] > 0
        assert 0.0 <= m["valid_recall@20"] <= 1.0
        syn = res["synthetic@30k"][model]
        assert "skipped" not in syn, syn
        assert syn["epoch_s"] > 0 and syn["rank_s"] > 0
    assert 20_000 <= res["synthetic@30k"]["train"] <= 30_000  # 80% of ~30k interactions (repeats dropped)
