"""`blast datasets get ml-100k`: real fetch from the package index (GroupLens is unreachable here),
idempotent re-run, and a clear error for a wrong file already at the destination."""

from __future__ import annotations

import filecmp
import shutil

import pytest

from blast_ray.cli import main
from blast_ray.etl.datasets import ML100K_FILES, get_dataset


def test_get_ml100k_from_recbole_wheel_matches_shared_copy(dataset, tmp_path, capsys):
    dest = tmp_path / "ml"
    assert main(["datasets", "get", "ml-100k", "--dest", str(dest)]) == 0
    shared = dataset("movielens-100k")
    for name in ML100K_FILES:
        assert filecmp.cmp(dest / name, shared / name, shallow=False), name
    assert "ml-100k is at" in capsys.readouterr().out


def test_get_is_idempotent_and_verifies(dataset, tmp_path):
    dest = tmp_path / "ml"
    dest.mkdir()
    for name in ML100K_FILES:
        shutil.copy(dataset("movielens-100k") / name, dest / name)
    mtimes = {n: (dest / n).stat().st_mtime_ns for n in ML100K_FILES}
    assert get_dataset("ml-100k", dest) == dest.resolve()
    assert mtimes == {n: (dest / n).stat().st_mtime_ns for n in ML100K_FILES}  # nothing re-fetched
    (dest / "ml-100k.user").write_text("user_id:token\n1\n")
    with pytest.raises(ValueError, match="not the RecBole ml-100k file"):
        get_dataset("ml-100k", dest)
    with pytest.raises(ValueError, match="unknown dataset"):
        get_dataset("ml-1m", dest)
