"""The core needs neither Ray nor Spark (issue 10 item 5): in a subprocess where ``import ray`` and
``import pyspark`` fail, the models, the one-worker training loop, the ranking metrics and scoring,
the kNN graph and the Sinkhorn / top-q / false-negative cores import and run on a real Baby slice.

BLAST trains with the real side inputs those cores produce (item kNN graph S_I and user graph S_U
from a co-occurrence feature, OT-augmented pairs H from Sinkhorn + top-q over R and G), LightGCN
ID-only; both must beat random ranking's expected Recall@20 (a popularity-free floor) by 2x.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import importlib.abc, json, sys

class _Blocked(importlib.abc.MetaPathFinder):
    """Any import of ray / pyspark (or their submodules) raises ImportError."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "pyspark"):
            raise ImportError(f"{name} is blocked in this test (core without Ray/Spark)")
        return None

sys.meta_path.insert(0, _Blocked())
for mod in ("ray", "pyspark"):
    try:
        __import__(mod)
    except ImportError:
        pass
    else:
        raise SystemExit(f"the blocker did not block {mod}")

import numpy as np
import torch
from scipy.sparse.linalg import svds

from blast_ray.augment.false_negatives import false_negative_candidates
from blast_ray.augment.sinkhorn import sparse_sinkhorn
from blast_ray.augment.topq import top_q_cells
from blast_ray.config import TrainConfig
from blast_ray.graphs.knn import knn_graph, sym_normalize
from blast_ray.models import MODELS
from blast_ray.ranking import known_items, score_split
from blast_ray.train import EvalPlan, TrainInputs, final_outputs, fit
from blast_ray.etl.readers import read_lattice_split

torch.set_num_threads(1)
data = read_lattice_split(sys.argv[1], max_users=int(sys.argv[2]))
R = data.train.tocsr()
u, s, vt = svds(R.T.astype(np.float64).tocsr(), k=16)
item_x = (u * s).astype(np.float32)  # a real-data item modality: SVD of R's item columns
user_x = np.asarray(R @ item_x, dtype=np.float32)
s_item = knn_graph(item_x, 10)
G = false_negative_candidates(R, [s_item])
ot = sparse_sinkhorn(R, G, eps=0.1, tol=1e-6, max_iter=500)
hu, hi, _ = top_q_cells(ot.f, ot.g, 0.1, R, G, int(0.1 * R.nnz))
out = {"n_users": data.n_users, "n_items": data.n_items, "augmented": int(len(hu))}
plan = EvalPlan(ks=(20,), batch_users=1024)
for model in ("lightgcn", "blast"):
    inputs = TrainInputs(data)
    if model == "blast":
        inputs.features = {"item_text": item_x, "user_text": user_x}
        inputs.item_graph = sym_normalize(s_item).astype(np.float32)
        inputs.user_graph = sym_normalize(knn_graph(user_x, 10)).astype(np.float32)
        inputs.extra_users, inputs.extra_items = hu, hi
        inputs.neg_exclude = (R + G).tocsr()
    cfg = TrainConfig(model=model, epochs=3, lr=0.01, seed=11, batch_size=2048, prune_ratio=0.5)
    state = fit(cfg, inputs, plan)
    _, h_u, f_i, valid, test = final_outputs(cfg, inputs, state, plan)
    again = score_split(torch.from_numpy(h_u), torch.from_numpy(f_i), data, "test", (20,), 1024)
    out[model] = {"valid": valid["recall@20"], "test": test["recall@20"], "rescored_test": again["recall@20"],
                  "epochs": state.epoch}
# random ranking: expected Recall@20 = 20 / (number of rankable items) per user, averaged
n_known = np.diff(known_items(data, "valid").indptr)
has = np.diff(data.valid.indptr) > 0
out["random_recall20"] = float(np.mean(20.0 / (data.n_items - n_known[has])))
out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "pyspark"))
print("RESULT " + json.dumps(out))
'''


def test_core_trains_without_ray_and_spark(dataset, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(dataset("amazon-baby-5core")), "1500"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    print(res)
    assert res["loaded"] == [], res["loaded"]  # not even a half-imported ray/pyspark module
    assert res["augmented"] > 0
    floor = 2.0 * res["random_recall20"]
    for model in ("lightgcn", "blast"):
        m = res[model]
        assert m["epochs"] == 3
        for k in ("valid", "test"):
            assert m[k] == m[k] and m[k] > floor, (model, k, m[k], floor)  # finite (not NaN), above the floor
        assert abs(m["rescored_test"] - m["test"]) < 1e-6  # one scoring rule: same mask, same figure
