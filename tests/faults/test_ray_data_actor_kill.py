"""Fault: SIGKILL the Ray Data actor that generates profiles, from outside, while the stage runs.

The actor is found in Ray's GCS actor table (``ray._private.state.actors()``: the state API that
works without the dashboard, which the local runtime does not start) by its class name (Ray
Data's pool actor wrapping ``ProfileWorker``: ``MapWorker(MapBatches(ProfileWorker))``). Ray Data restarts a dead pool actor and retries its
batch (``max_restarts=-1``, ``max_task_retries=-1``: its defaults for actor pools), so the stage
must finish with every (kind, idx) of the input exactly once.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from procs import pid_running

from blast_ray.store import ArtifactStore

pytestmark = pytest.mark.faults

TESTS = Path(__file__).resolve().parent.parent
PROFILE_ACTOR = "MapWorker(MapBatches(ProfileWorker))"


def _profiles_helpers():
    """The ETL-shaped real MovieLens tables and the stage runner of tests/test_profiles.py."""
    spec = importlib.util.spec_from_file_location("_profiles_helpers", TESTS / "test_profiles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _profile_actor_pids() -> dict[str, int]:
    """actor id -> pid of the live ProfileWorker pool actors in the GCS actor table."""
    import ray

    return {aid: int(a["Pid"]) for aid, a in ray._private.state.actors().items()
            if a.get("ActorClassName") == PROFILE_ACTOR and a.get("State") == "ALIVE" and a.get("Pid")}



def _cache_batches(root: Path, dataset: str) -> int:
    return len([p for p in (root / dataset / "cache" / "profiles").rglob("part-*.parquet") if "requests" not in p.parts])


class _KillProfileActor(threading.Thread):
    """Waits until a ProfileWorker pool actor has finished a batch (a cache file exists), SIGKILLs
    its process and records the pid and how many batches were done at that moment."""

    def __init__(self, store_root: Path, dataset: str, timeout_s: float = 240.0):
        super().__init__(daemon=True)
        self.store_root, self.dataset, self.timeout_s = store_root, dataset, timeout_s
        self.killed_pid: int | None = None
        self.killed_actor = ""
        self.was_running = False
        self.batches_before = -1
        self.error = ""

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        try:
            while time.monotonic() < deadline:
                actors = _profile_actor_pids()
                if actors and _cache_batches(self.store_root, self.dataset) >= 1:
                    self.killed_actor, pid = next(iter(actors.items()))
                    self.was_running = pid_running(pid)
                    self.batches_before = _cache_batches(self.store_root, self.dataset)
                    os.kill(pid, signal.SIGKILL)
                    self.killed_pid = pid
                    return
                time.sleep(0.02)
            self.error = f"no profiles actor with a finished batch within {self.timeout_s}s"
        except Exception as e:  # noqa: BLE001  (reported by the test)
            self.error = repr(e)


def test_killed_profiles_actor_every_row_exactly_once(tmp_path, data_dir, ray_local):
    h = _profiles_helpers()
    store_root = tmp_path / "store"
    store = ArtifactStore(str(store_root))
    tables = h.movielens_tables(data_dir)
    etl = h.write_etl(store, "ml-100k", tables)
    # template engine, one row a batch (one cache file each) on the first 400 items and 200 users:
    # 600 batches keep the pools busy for seconds, so the kill lands while most of the stage is to do
    n_items, n_users = 400, 200
    cfg = h.make_cfg(store.root, "ml-100k", "movies", engine="template", batch_size=1, sample_items=n_items,
                     sample_users=n_users)
    killer = _KillProfileActor(store_root, "ml-100k")
    killer.start()
    t0 = time.monotonic()
    out, manifest = h.run_stage(cfg, store, etl)
    print(f"profiles stage: {time.monotonic() - t0:.1f}s")
    killer.join(timeout=30)
    assert killer.killed_pid is not None, f"no profiles actor was killed: {killer.error}"
    assert killer.was_running and not pid_running(killer.killed_pid)
    # killed mid-stage: after the first batch, before the last (each pass has its own pool: a kill
    # that misses the items pass lands in the users pass)
    assert 1 <= killer.batches_before < n_items + n_users, killer.batches_before
    import ray

    restarted = ray._private.state.actors().get(killer.killed_actor, {})
    print(f"killed pid {killer.killed_pid} after {killer.batches_before} batches; actor {restarted})")
    assert restarted.get("NumRestarts", 0) >= 1, restarted  # Ray restarted the actor in place

    df = store.read_table(*out.parts, "profiles").to_pandas()
    got = list(zip(df["kind"], df["idx"].astype(int)))
    items = sorted(int(i) for i in tables["items"]["item_idx"])[:n_items]
    users = sorted(int(u) for u in tables["users"]["user_idx"])[:n_users]
    expected = {("item", i) for i in items} | {("user", u) for u in users}
    assert len(got) == len(set(got)), "a (kind, idx) appears more than once"
    assert set(got) == expected
    assert manifest["extra"]["generated"] == {"item": n_items, "user": n_users}
    assert df["text"].str.len().min() > 10 and not df["fallback"].any()
