"""Fault: one byte of a committed artifact flips (bit rot, a bad copy, a hand edit).

The manifest keeps the sha256 and size of every committed file (``StageOutput.commit``). Chosen
behaviour (docs/RELIABILITY.md): a run that includes the damaged stage recomputes it (WARNING
naming the file) instead of skipping to it; a reader that takes the output as it is (a stage not
selected in this run, ``StageOutput.committed``) fails with one line naming the file and
"content hash mismatch". Real data: MovieLens-100k ETL (session fixture) + template profiles.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest


def _flip_one_byte(path: Path) -> None:
    """XOR one byte in the middle of ``path`` in place, from outside the code under test."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _stage_dir(store_dir: Path, manifest: dict) -> Path:
    return store_dir / manifest["dataset"] / "stages" / manifest["stage"] / manifest["fingerprint"]


def _largest_file(stage_dir: Path, manifest: dict) -> Path:
    return max((stage_dir / rel for rel in manifest["files"] if not rel.endswith(".crc")), key=lambda p: p.stat().st_size)


@pytest.mark.faults
def test_flipped_byte_is_detected_recomputed_or_refused_in_one_line(ml100k_store, data_dir, tmp_path, ray_local,
                                                                      caplog, capsys):
    from blast_ray import cli
    from blast_ray.config import load_config
    from blast_ray.pipeline import run_pipeline
    from blast_ray.store import ArtifactStore, ContentHashMismatch, StageOutput
    from jobs.smoke import smoke_config

    cfg_path = smoke_config(data_dir, str(ml100k_store), tmp_path / "cfg.yaml", profiles={"engine": "template"})
    cfg = load_config(cfg_path)
    first = run_pipeline(cfg, stages=("etl", "profiles"))
    assert first.ok, first.error
    assert first.status["etl"] == "skipped" and first.status["profiles"] == "ran"
    etl_m, prof_m = first.manifests["etl"], first.manifests["profiles"]

    # every committed file is in the manifest with its sha256 and size (checked here with hashlib)
    for m in (etl_m, prof_m):
        d = _stage_dir(ml100k_store, m)
        assert m["schema"] == 2 and sorted(m["content"]) == sorted(m["files"]) and len(m["files"]) >= 1
        for rel, want in m["content"].items():
            blob = (d / rel).read_bytes()
            assert want == {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}, rel

    # 1. a flipped byte in the profiles output: the next run detects it and recomputes the stage
    prof_dir = _stage_dir(ml100k_store, prof_m)
    victim = _largest_file(prof_dir, prof_m)
    whole = ArtifactStore(str(ml100k_store)).read_table(*StageOutput.committed(
        ArtifactStore(str(ml100k_store)), "ml-100k", "profiles", prof_m["fingerprint"]).parts, "profiles").to_pandas()
    _flip_one_byte(victim)
    with caplog.at_level(logging.WARNING, logger="blast_ray.pipeline"):
        second = run_pipeline(cfg, stages=("etl", "profiles"))
    assert second.ok, second.error
    assert second.status == {**second.status, "etl": "skipped", "profiles": "ran"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "blast_ray.pipeline"]
    assert any("content hash mismatch" in w and str(victim) in w and "recomputing" in w for w in warnings), warnings
    assert second.manifests["profiles"]["fingerprint"] == prof_m["fingerprint"]  # same inputs, same output key
    out = StageOutput.committed(ArtifactStore(str(ml100k_store)), "ml-100k", "profiles", prof_m["fingerprint"])
    assert out.verify() == []  # whole again
    again = out.store.read_table(*out.parts, "profiles").to_pandas()
    cols = ["kind", "idx", "text", "fallback"]
    assert again.sort_values(["kind", "idx"])[cols].reset_index(drop=True).equals(
        whole.sort_values(["kind", "idx"])[cols].reset_index(drop=True))

    # 2. a flipped byte in the ETL output, read without recomputing it: one line naming the file
    etl_dir = _stage_dir(ml100k_store, etl_m)
    victim = _largest_file(etl_dir, etl_m)
    _flip_one_byte(victim)
    store = ArtifactStore(str(ml100k_store))
    with pytest.raises(ContentHashMismatch) as exc:
        StageOutput.committed(store, "ml-100k", "etl", etl_m["fingerprint"])
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"content hash mismatch: {victim}") and "'etl'" in msg
    # ... the pipeline when etl is not selected (blast profiles): refused, nothing run
    third = run_pipeline(cfg, stages=("profiles",), use_committed_upstream=True)
    assert not third.ok and third.failed_stage == "etl" and "profiles" not in third.manifests
    assert "\n" not in third.error and f"content hash mismatch: {victim}" in third.error
    # ... and the CLI: exit 1, one `blast:` line naming the file, no traceback
    capsys.readouterr()
    try:
        rc = cli.main(["profiles", "--config", str(cfg_path)])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("blast")]
    assert rc == 1 and "Traceback" not in err, err
    assert lines and "content hash mismatch" in lines[-1] and str(victim) in lines[-1], err

    # 3. an old manifest (schema 1, no "content") stays readable: nothing to check, no error
    man = etl_dir / "_MANIFEST.json"
    old = json.loads(man.read_text())
    old.pop("content")
    old["schema"] = 1
    man.write_text(json.dumps(old))
    assert StageOutput.committed(store, "ml-100k", "etl", etl_m["fingerprint"]).verify() == []
