"""/proc readers shared by the fault tests (Linux): is a pid alive, who is in a process group."""

from __future__ import annotations

from pathlib import Path


def _stat(pid: int | str) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of /proc/<pid>/stat, or None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:].split()


def pid_running(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) process."""
    st = _stat(pid)
    return st is not None and st[1][0] != "Z"


def group_members(pgid: int) -> dict[int, str]:
    """pid -> command name of every live process in process group ``pgid``."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(d.name)
            if st is not None and st[1][0] != "Z" and int(st[1][2]) == pgid:
                out[int(d.name)] = st[0]
    return out
