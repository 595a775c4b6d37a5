"""One artifact store for local disk and S3, on ``pyarrow.fs``.

``ArtifactStore("./blast-data")`` or ``ArtifactStore("s3://bucket/prefix")``. For S3 the endpoint
and credentials come from the standard AWS environment variables (``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``).

Paths inside the store are given as parts, built by ``blast_ray.store.layout``
(``store.uri(*layout.stage_root("ml-100k", "etl"))``); ``uri`` returns what Ray Data / pandas /
Spark accept, ``path`` the path for ``store.fs``.

Nothing escapes the root: every part is one segment checked by ``layout.check_part`` (no ``.``,
``..``, ``/``, ``\``, ``%``, ``~``, ``:``, control or non-ASCII character, at most 255 characters),
and the joined path (local: with symlinks resolved, so a link planted in the store cannot lead
out) must lie inside the root; anything else is a ValueError naming the part.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from blast_ray.store.layout import check_parts, rel_parts


COPY_CHUNK = 8 << 20  # bytes per read when a store file is streamed to local disk


def copy_to_local(fs: pafs.FileSystem, path: str, local: str) -> None:
    """Stream the file ``path`` of ``fs`` (local or S3) into the local file ``local``, chunk by
    chunk (memory: one chunk, whatever the file's size)."""
    with fs.open_input_stream(path) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, COPY_CHUNK)


def _s3_filesystem() -> pafs.S3FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs["endpoint_override"] = host or endpoint
        kwargs["scheme"] = scheme if host else "https"
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        kwargs["region"] = region
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kwargs)


class StoreUnavailable(OSError):
    """The S3 store cannot be reached or refuses the credentials; the message is one line naming
    the store URI, the cause in plain words and the environment variables that fix it."""


# pyarrow's S3 errors are one OSError class; their text says what went wrong.
_NETWORK = re.compile(r"NETWORK_CONNECTION|Could not resolve host|Couldn't connect|Connection refused|curlCode: 7|Failed to connect", re.I)
_DENIED = re.compile(r"ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|ExpiredToken|InvalidToken|No response body", re.I)
_NO_BUCKET = re.compile(r"NoSuchBucket|NO_SUCH_BUCKET|bucket does not exist", re.I)


def explain_s3_error(e: OSError, uri: str) -> StoreUnavailable | None:
    """A one-line :class:`StoreUnavailable` for a pyarrow S3 error on ``uri``, or None when the
    error is not about reaching the store (a missing key stays a FileNotFoundError)."""
    text = " ".join(str(e).split())
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    host = re.search(r"(?:resolve host|connect to)[: ]+([^\s;,]+)", text)
    details = text.split("Details: ")[-1]
    cause = f"could not resolve host {host.group(1)}" if host and "resolve" in text else details[-200:]
    if _NETWORK.search(text):
        if not endpoint and not os.environ.get("AWS_ACCESS_KEY_ID"):
            return StoreUnavailable(
                f"no S3 credentials or endpoint for {uri}: set AWS_ENDPOINT_URL (an S3-compatible server, "
                f"e.g. http://127.0.0.1:9000) / AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use a local "
                f"--store folder (cause: {cause})")
        where = endpoint or "the AWS S3 endpoint"
        return StoreUnavailable(f"S3 endpoint {where} unreachable for {uri}: is the server running and "
                                f"AWS_ENDPOINT_URL right? (cause: {cause})")
    if _DENIED.search(text):
        return StoreUnavailable(f"S3 refused access to {uri}: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                                f"(and AWS_SESSION_TOKEN) for this bucket (cause: {text[-200:]})")
    if _NO_BUCKET.search(text):
        return StoreUnavailable(f"S3 bucket of {uri} does not exist: create it or fix --store (cause: {text[-200:]})")
    return None


def _translated(method):
    """Run a store method; an S3 error about reaching the store becomes one StoreUnavailable line."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except FileNotFoundError:
            raise
        except OSError as e:
            better = explain_s3_error(e, self.root) if self.is_s3 and not isinstance(e, StoreUnavailable) else None
            if better is None:
                raise
            raise better from e
    return wrapper


class ArtifactStore:
    """A root URI (local folder or ``s3://bucket/prefix``) with atomic small-object writes."""

    def __init__(self, root: str | os.PathLike[str]):
        root = str(root)
        if root.startswith("s3://"):
            self.is_s3 = True
            self.fs: pafs.FileSystem = _s3_filesystem()
            self._base = root[len("s3://"):].rstrip("/")
            if not self._base:
                raise ValueError("store URI s3:// needs a bucket, e.g. s3://my-bucket/blast")
        elif "://" in root and not root.startswith("file://"):
            raise ValueError(f"store {root!r}: only local paths and s3://bucket/prefix are supported")
        else:
            self.is_s3 = False
            self.fs = pafs.LocalFileSystem()
            self._base = os.path.abspath(root.removeprefix("file://"))
            os.makedirs(self._base, exist_ok=True)
        # what a path must stay inside (local: the root with its own symlinks resolved)
        self._real_base = os.path.realpath(self._base) if not self.is_s3 else posixpath.normpath(self._base)
        self.root = root

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    def __reduce__(self):  # picklable for Ray tasks: rebuild the filesystem on the worker
        return (ArtifactStore, (self.root,))

    # ---- paths -------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """Filesystem path (for ``self.fs``) of ``parts`` under the root: each part one checked
        segment (``layout.check_part``), the result inside the root (local stores: after resolving
        symlinks); anything else is a ValueError naming the part."""
        segs = check_parts(parts)
        joined = posixpath.join(self._base, *segs)
        resolved = os.path.realpath(joined) if not self.is_s3 else posixpath.normpath(joined)
        base = self._real_base
        if resolved != base and not resolved.startswith(base.rstrip("/") + "/"):
            raise ValueError(f"store path {'/'.join(segs)!r} resolves to {resolved!r}, outside the store root {self.root!r}")
        return joined

    def uri(self, *parts: str) -> str:
        """Full URI of ``parts`` (``s3://...`` or an absolute local path)."""
        p = self.path(*parts)
        return f"s3://{p}" if self.is_s3 else p

    # ---- queries -----------------------------------------------------------------------------
    @_translated
    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    @_translated
    def list_dir(self, *parts: str) -> list[str]:
        """Names directly under ``parts`` (empty when it does not exist)."""
        sel = pafs.FileSelector(self.path(*parts), allow_not_found=True, recursive=False)
        return sorted(posixpath.basename(i.path) for i in self.fs.get_file_info(sel))

    @_translated
    def list_files(self, *parts: str) -> list[str]:
        """Paths (relative to ``parts``) of all files below ``parts``, recursively."""
        base = self.path(*parts)
        sel = pafs.FileSelector(base, allow_not_found=True, recursive=True)
        return sorted(
            posixpath.relpath(i.path, base) for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File
        )

    # ---- bytes / json ------------------------------------------------------------------------
    def _write_atomic(self, parts: tuple[str, ...], fill) -> None:
        """``fill(f)`` writes the content to a binary file object: local files go to a temp name,
        fsync, rename; on S3 one streamed (multipart) upload, visible only once complete."""
        target = self.path(*parts)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        if self.is_s3:
            with self.fs.open_output_stream(target) as f:
                fill(f)
            return
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    @_translated
    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write atomically: local files go to a temp name and are renamed; an S3 PUT is atomic."""
        self._write_atomic(parts, lambda f: f.write(data))

    @_translated
    def write_file(self, local_path: str, *parts: str, chunk_bytes: int = 8 << 20) -> None:
        """Copy the local file ``local_path`` to ``parts`` in ``chunk_bytes`` chunks (never whole in
        memory: Spark's part files grow with the data), atomically as :meth:`write_bytes`. Like every
        stage file, it counts only once the manifest is written."""
        with open(local_path, "rb") as src:  # opened first: a missing file writes nothing
            self._write_atomic(parts, lambda f: shutil.copyfileobj(src, f, chunk_bytes))

    @_translated
    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    @_translated
    def file_digest(self, *parts: str, chunk_bytes: int = 1 << 20) -> tuple[str, int]:
        """(sha256 hex, size in bytes) of one file, read in ``chunk_bytes`` chunks (never the whole
        file in memory; local and S3 alike)."""
        h = hashlib.sha256()
        size = 0
        with self.fs.open_input_stream(self.path(*parts)) as f:
            while True:
                chunk = f.read(chunk_bytes)
                if not chunk:
                    break
                h.update(chunk)
                size += len(chunk)
        return h.hexdigest(), size

    def write_json(self, obj: Any, *parts: str) -> None:
        self.write_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), *parts)

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    def write_text(self, text: str, *parts: str) -> None:
        self.write_bytes(text.encode("utf-8"), *parts)

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode("utf-8")

    # ---- tables ------------------------------------------------------------------------------
    def write_table(self, table: pa.Table, *parts: str) -> None:
        """Write one Parquet file at ``parts`` (a file path ending in .parquet)."""
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(buf.getvalue(), *parts)

    @_translated
    def read_table(self, *parts: str, columns: list[str] | None = None) -> pa.Table:
        """Read a Parquet file or a folder of Parquet files."""
        return pq.read_table(self.path(*parts), filesystem=self.fs, columns=columns)

    # ---- folders -----------------------------------------------------------------------------
    @_translated
    def delete_dir(self, *parts: str) -> None:
        p = self.path(*parts)
        if self.fs.get_file_info(p).type == pafs.FileType.Directory:
            self.fs.delete_dir(p)
        elif self.exists(*parts):
            self.fs.delete_file(p)

    @_translated
    def delete_file(self, *parts: str) -> None:
        if self.exists(*parts):
            self.fs.delete_file(self.path(*parts))

    def upload_dir(self, local_dir: str, *parts: str) -> int:
        """Copy a local folder's files under ``parts``; returns the number of files copied."""
        n = 0
        for dirpath, _, files in os.walk(local_dir):
            for name in files:
                if name.startswith(".") or name.endswith(".crc"):
                    continue  # Spark's checksum side files
                src = os.path.join(dirpath, name)
                rel = os.path.relpath(src, local_dir).replace(os.sep, "/")
                self.write_file(src, *parts, *rel_parts(rel))
                n += 1
        return n

    def download_dir(self, local_dir: str, *parts: str) -> int:
        n = 0
        for rel in self.list_files(*parts):
            dst = os.path.join(local_dir, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            copy_to_local(self.fs, self.path(*parts, *rel_parts(rel)), dst)
            n += 1
        return n
