"""One line for a failure: the stage, the file or URL, and the cause in plain words.

``one_line(exc)`` is what the driver records as a failed stage's ``error`` and what the entry
points print; the whole traceback goes to the run's ``run.log`` (and the console with ``-v``).
It reads through the wrappers that bury a cause: a Spark ``Py4JJavaError`` (hundreds of lines of
Java stack: the file from ``Encountered error while reading file X`` and the innermost
``Caused by:``), a Ray ``RayTaskError`` (the task's own exception; behind Ray Data's
``UserCodeException``, the last non-Ray exception of the task's traceback text), chained exceptions, and the
store's ``StoreUnavailable`` (already one line). A Spark read that breaks on a gzip file that ends
early is said as ``truncated gzip: <file>: N complete lines before the break``, N counted here by
streaming the file with zlib to the point where it breaks (docs/stages/etl.md: such a file is
refused, not half-read).
"""

from __future__ import annotations

import re
import zlib

_READ_FILE = re.compile(r"Encountered error while reading file (\S+?)\.?\s")
_CAUSED_BY = re.compile(r"^\s*Caused by: (.+)$", re.M)
_JAVA_FIRST = re.compile(r"^: ([\w.$]+(?:Exception|Error)\b.*)$", re.M)


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def count_gzip_lines(path: str) -> tuple[int, bool]:
    """(complete lines, True when the stream ends early) of a gzip file, streamed with zlib in 1 MiB
    chunks (every byte decoded before the break is counted; multi-member files are followed)."""
    n = 0
    last = b""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            while chunk:
                try:
                    out = d.decompress(chunk)
                except zlib.error:
                    return n, True
                n += out.count(b"\n")
                last = out[-1:] or last
                chunk = d.unused_data if d.eof else b""
                if d.eof and chunk:
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    if not d.eof:
        return n, True
    return n + (1 if last and last != b"\n" else 0), False


def local_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri.removeprefix("file:")


def _spark_line(text: str) -> str:
    """The file and innermost cause of a Py4JJavaError's text."""
    file_m = _READ_FILE.search(text)
    causes = _CAUSED_BY.findall(text)
    cause = causes[-1].strip() if causes else ""
    if not cause:
        m = _JAVA_FIRST.search(text)
        cause = m.group(1).strip() if m else _first_line(text)
    if file_m:
        path = local_path(file_m.group(1))
        if path.endswith(".gz") and ("EOFException" in cause or "Unexpected end" in cause):
            try:
                lines, truncated = count_gzip_lines(path)
            except OSError:
                lines, truncated = -1, True
            if truncated:
                return f"truncated gzip: {path}: {lines} complete lines before the break (Spark: {cause})"
        return f"cannot read {path}: {cause}"
    return f"Spark: {cause}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Unavailable)): (.+)$", re.M)


def _ray_task_name(text: str) -> str:
    """``MapWorker(MapBatches(ProfileWorker))`` from a task traceback's ``ray::...submit()`` header."""
    m = re.search(r"ray::(\S+?)\(\)(?=\s|$)", text)
    if not m:
        return "?"
    head, _, _method = m.group(1).rpartition(".")
    return head if head.endswith(")") else m.group(1)


def _task_cause(text: str) -> str:
    """The last non-Ray exception of a Ray task's traceback text (the one Ray's wrapper wraps)."""
    found = [(t, msg) for t, msg in _EXC_LINE.findall(text) if not t.startswith("ray.")]
    if not found:
        return ""
    t, msg = found[-1]
    short = t.rsplit(".", 1)[-1]
    return msg.strip() if short == "StoreUnavailable" else f"{short}: {msg.strip()}"


def one_line(exc: BaseException) -> str:
    """``exc`` as one line naming the file/URL and the cause (see the module docstring)."""
    name = type(exc).__name__
    if name == "Py4JJavaError" or "java." in str(exc)[:2000] and "\n\tat " in str(exc):
        return _spark_line(str(exc))
    if name.startswith("RayTaskError") or name == "RayTaskError":
        cause = getattr(exc, "cause", None)
        text = _ANSI.sub("", str(exc))
        fn = getattr(exc, "function_name", None) or _ray_task_name(text)
        if isinstance(cause, BaseException) and not type(cause).__module__.startswith("ray."):
            return f"Ray task {fn}: {one_line(cause)}"
        # a Ray wrapper (Ray Data's UserCodeException): its __cause__ did not cross the process
        # boundary, but the task's traceback text names the user-level exception
        return f"Ray task {fn}: {_task_cause(text) or _first_line(text)}"
    if name == "StoreUnavailable":
        return _first_line(str(exc))
    # a wrapper raised from a store/Spark/Ray failure: its cause says more
    inner = exc.__cause__
    if inner is not None and type(inner).__name__ in ("Py4JJavaError", "StoreUnavailable") or (
            inner is not None and type(inner).__name__.startswith("RayTaskError")):
        return one_line(inner)
    msg = _first_line(str(exc))
    return f"{name}: {msg}" if msg else name
