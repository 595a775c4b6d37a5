"""Every blast-ray process starts with runtime.PROCESS_ENV_DEFAULTS unless the user set a value:
the CLI's own process and the local Ray cluster's workers (where training runs), and torch in such
a process really asks the kernel for huge pages for a large tensor (the mapping holding it carries
the ``hg`` flag of madvise(MADV_HUGEPAGE) in /proc/self/smaps, whether or not the kernel then
finds huge pages to give)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blast_ray import runtime
from blast_ray.runtime import PROCESS_ENV_DEFAULTS, apply_process_env_defaults

THP = "THP_MEM_ALLOC_ENABLE"
# what runs in the probed process: the env value and the VmFlags of the mapping of a fresh 64 MiB tensor
PROBE = """
import os, torch
def vm_flags(addr):
    inside = False
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if line.startswith("VmFlags"):
            if inside:
                return line.split()[1:]
        elif "-" in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= addr < hi
    return []
def probe():
    t = torch.empty(64 << 20, dtype=torch.uint8)
    return os.environ.get("THP_MEM_ALLOC_ENABLE"), "hg" in vm_flags(t.data_ptr())
"""

needs_thp = pytest.mark.skipif(not Path("/sys/kernel/mm/transparent_hugepage").exists(),
                               reason="this kernel has no transparent huge pages (nothing to ask for)")


def test_the_defaults_fill_only_what_the_user_left_unset(monkeypatch):
    monkeypatch.setattr(runtime, "_FILLED_IN", set())
    monkeypatch.setenv(THP, "0")  # an opt-out wins, and is not passed on as the job's (the user's own)
    assert apply_process_env_defaults() == {} and os.environ[THP] == "0"
    monkeypatch.delenv(THP)
    assert apply_process_env_defaults() == {THP: PROCESS_ENV_DEFAULTS[THP]} == {THP: "1"}
    assert os.environ[THP] == "1"
    assert apply_process_env_defaults() == {THP: "1"}  # a later call (ensure_ray after the CLI's) passes it on too


@needs_thp
def test_ray_workers_start_with_the_defaults_and_torch_asks_for_huge_pages(ray_local):
    def in_worker():
        scope: dict = {}
        exec(PROBE, scope)
        return scope["probe"]()

    assert ray_local.get(ray_local.remote(in_worker).remote()) == ("1", True)


@needs_thp
def test_the_cli_sets_them_before_torch_allocates(tmp_path):
    """The `blast` entry point (main_wrapper) applies the defaults before its body runs, which is
    early enough for torch's allocator (it reads the variable once, at its first allocation)."""
    script = PROBE + (
        "import argparse\n"
        "from blast_ray.entry import main_wrapper\n"
        "def body(args):\n"
        "    print(*probe())\n"
        "    return 0\n"
        "raise SystemExit(main_wrapper(body, argparse.ArgumentParser(prog='probe'), []))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != THP}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True"], out.stdout
    # and without the entry point's defaults, the same allocation gets no such advice (the probe can fail)
    bare = subprocess.run([sys.executable, "-c", PROBE + "print(*probe())\n"], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
    assert bare.stdout.split() == ["None", "False"], bare.stdout + bare.stderr
