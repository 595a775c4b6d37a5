"""A store nobody escapes (issue 14 item 1): hostile names against the artifact store (local and
S3), run ids from outside (`blast runs`, --run-id), and no credential in anything a run writes."""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import pytest

from blast_ray.store import ArtifactStore
from blast_ray.store.names import MAX_NAME_LEN, is_valid_name, validate_name

# (name, why it is hostile)
HOSTILE = [
    ("..", "parent folder"),
    (".", "the folder itself"),
    ("a/..", "climbs back out"),
    ("a/../..", "climbs out of the root"),
    ("../evil", "sibling of the root"),
    ("~", "home shorthand"),
    ("~root", "someone's home"),
    ("/etc", "absolute"),
    ("/", "absolute root"),
    ("%2e%2e", "percent-encoded .."),
    ("%2F", "percent-encoded /"),
    ("\uff0e\uff0e", "fullwidth dots"),
    ("\u2024\u2024", "one-dot leaders"),
    ("a\u2215b", "division slash"),
    ("a\x00b", "NUL"),
    ("a\nb", "newline"),
    ("a\tb", "tab"),
    ("a\\..\\b", "backslashes"),
    ("x:y", "colon (URI scheme to Hadoop)"),
    ("a//b", "empty segment"),
    ("x" * 300, "very long"),
]


@pytest.mark.parametrize(("name", "why"), HOSTILE, ids=[w for _, w in HOSTILE])
def test_hostile_parts_never_leave_a_local_store(tmp_path, name, why):
    root = tmp_path / "store"
    store = ArtifactStore(str(root))
    before = set(os.listdir(tmp_path))
    for parts in ((name,), ("ml-100k", "runs", name), (name, "stages", "etl")):
        with pytest.raises(ValueError, match=r"store path part .*(segment|absolute|character|'~')") as e:
            store.write_json({"x": 1}, *parts, "run.json")
        assert "\n" not in str(e.value) and len(str(e.value)) < 300  # one readable line
        with pytest.raises(ValueError):
            store.exists(*parts)
        with pytest.raises(ValueError):
            store.delete_dir(*parts)
    assert set(os.listdir(tmp_path)) == before and list(root.iterdir()) == []  # nothing written anywhere


S3_HOSTILE = [h for h in HOSTILE if h[1] in ("parent folder", "climbs back out", "absolute", "percent-encoded ..",
                                              "fullwidth dots", "NUL")]


@pytest.mark.parametrize(("name", "why"), S3_HOSTILE, ids=[w for _, w in S3_HOSTILE])
def test_hostile_parts_never_leave_an_s3_store(s3_bucket, name, why):
    import boto3

    store = ArtifactStore(f"{s3_bucket}/prefix")
    with pytest.raises(ValueError, match="store path part"):
        store.write_json({"x": 1}, "ml-100k", name, "run.json")
    store.write_json({"ok": 1}, "ml-100k", "runs", "r1", "run.json")  # a plain name still works
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
            .list_objects_v2(Bucket=s3_bucket[5:]).get("Contents", [])]
    # (pyarrow also writes empty "folder/" marker objects, all under the prefix)
    assert all(k.startswith("prefix/") for k in keys) and [k for k in keys if not k.endswith("/")] == ["prefix/ml-100k/runs/r1/run.json"]


def test_plain_parts_still_work(tmp_path):
    """What the stages write: one segment per part (layout.check_part), Spark/Ray file names."""
    store = ArtifactStore(str(tmp_path / "store"))
    for parts in (("ml-100k", "stages", "etl", "abc123", "_MANIFEST.json"),
                  ("ml-100k", "stages", "etl", "abc123", "items", "part-00000-1f2e-c000.snappy.parquet"),
                  ("ml-100k", "runs", "20261201-093000-abc", ".part-0.crc"),
                  ("ml-100k", "cache", "profiles", "03573p70PtmA2yDqI4d9Oi_000000-0.parquet")):
        store.write_bytes(b"x", *parts)
        assert store.read_bytes(*parts) == b"x"
        assert store.path(*parts).startswith(str(tmp_path / "store") + "/")
    with pytest.raises(ValueError, match="is refused"):  # a part is one segment, never a path
        store.path("ml-100k", "stages/etl")


def test_a_symlink_planted_in_the_store_does_not_lead_out(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    store = ArtifactStore(str(tmp_path / "store"))
    (tmp_path / "store" / "ml-100k").mkdir()
    (tmp_path / "store" / "ml-100k" / "runs").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the store root"):
        store.write_json({"x": 1}, "ml-100k", "runs", "r1", "run.json")
    assert list(outside.iterdir()) == []


BAD_NAMES = HOSTILE + [("-rf", "leading dash"), ("_x", "leading underscore"), ("", "empty"),
                       ("a" * (MAX_NAME_LEN + 1), "over the length limit"), ("a b", "space")]


@pytest.mark.parametrize(("name", "why"), BAD_NAMES, ids=[w for _, w in BAD_NAMES])
def test_names_refused(name, why):
    assert not is_valid_name(name)
    with pytest.raises(ValueError, match=r"run id .* is not a valid name: it must match \[A-Za-z0-9\]"):
        validate_name(name, "run id")


@pytest.mark.parametrize("name", ["ml-100k", "amazon-baby", "20261201-093000-abc123", "a", "A.b_c-1", "x" * MAX_NAME_LEN])
def test_names_accepted(name):
    assert validate_name(name, "run id") == name


def _runs_args(store, action, *run_ids, dataset="ml-100k"):
    return argparse.Namespace(action=action, run_ids=list(run_ids), store=str(store), dataset=dataset, config=None)


@pytest.mark.parametrize("rid", ["..", ".", "a/..", "../../etc", "%2e%2e", "\uff0e\uff0e", "a\x00b", "x" * 300])
def test_runs_cli_refuses_hostile_run_ids(tmp_path, rid):
    from blast_ray.runs_cli import runs_command

    store = tmp_path / "store"
    for action in ("show", "promote", "compare"):
        with pytest.raises(ValueError, match="run id .* is not a valid name"):
            runs_command(_runs_args(store, action, rid), out=io.StringIO())
    with pytest.raises(ValueError, match="--dataset .* is not a valid name"):
        runs_command(_runs_args(store, "list", dataset=".."), out=io.StringIO())
    assert not store.exists() or list(store.rglob("*")) == []


def test_blast_runs_show_hostile_id_is_one_line_exit_2_or_1(tmp_path):
    """Through the real CLI: a clear one-line error, no traceback, nonzero exit."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    p = subprocess.run([sys.executable, "-m", "blast_ray.cli", "runs", "show", "..", "--store", str(tmp_path / "s"),
                        "--dataset", "ml-100k"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "run id '..' is not a valid name" in p.stderr + p.stdout


def test_pipeline_refuses_a_hostile_run_id(tmp_path, data_dir):
    from blast_ray.config import load_config
    from blast_ray.pipeline import run_pipeline
    from jobs.smoke import smoke_config

    cfg = load_config(smoke_config(data_dir, str(tmp_path / "store"), tmp_path / "cfg.yaml"))
    with pytest.raises(ValueError, match="--run-id '../x' is not a valid name"):
        run_pipeline(cfg, stages=("etl",), run_id="../x")
    assert not (tmp_path / "x").exists()


# ---- no credential in anything a run writes -----------------------------------------------
FAKE_SECRET = "FAKEsecretKEY-h4-9f3c2a7e1b5d4c8a"
FAKE_TOKEN = "FAKEsessionTOKEN-h4-77aa11bb22cc33dd"
FAKE_KEY_ID = "AKIAFAKEH4KEYID0000"


def test_credentials_never_written_by_a_run(tmp_path, data_dir, ray_local, monkeypatch, caplog, capfd):
    """etl + profiles (template) on the real MovieLens-100k into a local store with recognisable
    fake AWS credentials in the environment: no file of the store, no log record and nothing on
    stdout/stderr (Spark's JVM included) holds them."""
    import logging

    from blast_ray.config import load_config
    from blast_ray.pipeline import run_pipeline
    from blast_ray.report.console import print_summary
    from blast_ray.runs_cli import runs_command
    from jobs.smoke import smoke_config

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", FAKE_TOKEN)
    store_dir = tmp_path / "store"
    cfg = load_config(smoke_config(data_dir, str(store_dir), tmp_path / "cfg.yaml", profiles={"engine": "template"}))
    with caplog.at_level(logging.DEBUG):
        res = run_pipeline(cfg, stages=("etl", "profiles"))
        assert res.ok, res.error
        print_summary(cfg, res)
        out = io.StringIO()
        runs_command(_runs_args(store_dir, "show", res.run_id), out=out)
        runs_command(_runs_args(store_dir, "list"), out=out)
    captured = capfd.readouterr()
    files = [p for p in store_dir.rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.name == "run.json" for p in files) and any(p.name == "_MANIFEST.json" for p in files)
    texts = {"log records": "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records),
             "stdout": captured.out, "stderr": captured.err, "blast runs show/list": out.getvalue()}
    assert res.run_id in texts["blast runs show/list"]
    for secret in (FAKE_SECRET, FAKE_TOKEN, FAKE_KEY_ID):
        leaked = [str(p.relative_to(store_dir)) for p in files if secret.encode() in p.read_bytes()]
        assert not leaked, f"{secret} written to {leaked}"
        assert not [k for k, t in texts.items() if secret in t], f"{secret} in {[k for k, t in texts.items() if secret in t]}"
