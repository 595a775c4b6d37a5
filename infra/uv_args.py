"""Print the `uv pip install` flags that make uv see what pip sees on this machine.

uv (used by the Makefile because it installs the same pins 3-4x faster than pip: the main venv in
~51 s instead of ~3 min, the DGL venv in ~37 s instead of ~2 min 10 s on the 2-core CI machine)
does not read pip's configuration. Build machines keep local wheels and indexes there
(``find-links``, ``extra-index-url``, a global ``constraint`` capping torch to the build on disk),
so this passes them on: the flags are printed on one line for the Makefile's ``$(shell ...)``.
Nothing configured: nothing printed, and uv uses PyPI as pip would.

Usage: ``python infra/uv_args.py`` (the Python whose pip config counts: the one making the venvs).
"""

from __future__ import annotations

import shlex
import subprocess
import sys


def pip_config() -> dict[str, str]:
    """``pip config list`` as {key: value}, the environment's PIP_* entries (``:env:.key``) winning
    over the files' (``global.key``, ``install.key``), as pip itself applies them."""
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, tuple[int, str]] = {}
    rank = {"global": 0, "install": 1, ":env:": 2}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep or "." not in key:
            continue
        scope, name = key.rsplit(".", 1) if not key.startswith(":env:") else (":env:", key[len(":env:."):])
        if scope not in rank:
            continue
        value = value.strip().strip("'\"")
        if name not in found or rank[scope] >= found[name][0]:
            found[name] = (rank[scope], value)
    return {k: v for k, (_, v) in found.items()}


def uv_flags(cfg: dict[str, str]) -> list[str]:
    flags: list[str] = []
    for link in cfg.get("find-links", "").split():
        flags += ["--find-links", link]
    if cfg.get("index-url"):
        flags += ["--index-url", cfg["index-url"]]
    extra = cfg.get("extra-index-url", "").split()
    for url in extra:
        flags += ["--extra-index-url", url]
    if extra or cfg.get("find-links"):
        # pip picks the best version across all its indexes; uv by default stops at the first index
        # that has the package (a local mirror with older releases would then hide PyPI's pins)
        flags += ["--index-strategy", "unsafe-best-match"]
    for path in cfg.get("constraint", "").split():
        flags += ["--constraint", path]
    if cfg.get("cert"):
        flags += ["--native-tls"]  # the system store, where a configured CA bundle lives
    return flags


if __name__ == "__main__":
    print(shlex.join(uv_flags(pip_config())))
