"""The `blast` command and the shared entry-point layer (blast_ray.entry): --version, every
sub-command's --help, -v/-q on either side of the sub-command, `config show|validate`,
`run --dry-run` on a real config and a tmp store, `runs show | head -1` without a traceback, the
exit codes, the job launchers in jobs/ and spark/, and what the wheel installs."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from blast_ray import __version__
from blast_ray.cli import build_parser, main
from blast_ray.config import STAGES, ConfigError
from blast_ray.entry import THIRD_PARTY_LOGGERS, main_wrapper, setup_logging, verbosity

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture()
def smoke_cfg(data_dir, tmp_path) -> Path:
    from jobs.smoke import smoke_config

    return smoke_config(data_dir, str(tmp_path / "store"), tmp_path / "cfg.yaml")


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"blast {__version__} (blast-ray)"


def _subcommands(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(((*prefix, name), sub))
                out.extend(_subcommands(sub, (*prefix, name)))
    return out


def test_every_subcommand_has_a_description_and_its_own_help(capsys):
    subs = _subcommands(build_parser())
    names = {" ".join(path) for path, _ in subs}
    assert {*STAGES, "run", "config", "runs", "datasets", "datasets get", "pipeline", "nightly"} <= names
    for path, sub in subs:
        assert sub.description and len(sub.description) > 20, path
        assert main([*path, "--help"]) == 0, path
        out = capsys.readouterr().out
        assert out.startswith(f"usage: blast {' '.join(path)}"), path
        assert sub.description.split()[0] in out, path
        assert "-v, --verbose" in out and "-q, --quiet" in out, path


def test_verbose_and_quiet_before_or_after_the_subcommand():
    p = build_parser()
    assert verbosity(p.parse_args(["config", "validate", "--config", "x.yaml", "-v"])) == 1
    assert verbosity(p.parse_args(["-v", "config", "validate", "--config", "x.yaml"])) == 1
    assert verbosity(p.parse_args(["runs", "list", "--store", "s", "--dataset", "d", "-q"])) == -1
    assert verbosity(p.parse_args(["-q", "run", "--config", "x.yaml"])) == -1
    assert verbosity(p.parse_args(["train", "--config", "x.yaml"])) == 0
    with pytest.raises(SystemExit):  # both at once is a usage error
        p.parse_args(["run", "--config", "x.yaml", "-v", "-q"])


def test_logging_third_party_quiet_blast_debug_to_files():
    setup_logging(0)
    root = logging.getLogger()
    assert root.level == logging.DEBUG  # a run's run.log gets blast-ray's DEBUG lines
    consoles = [h for h in root.handlers if getattr(h, "_blast_console", False)]
    assert len(consoles) == 1 and consoles[0].level == logging.INFO
    for name in THIRD_PARTY_LOGGERS:
        assert logging.getLogger(name).level == logging.WARNING, name
    assert not logging.getLogger("py4j.clientserver").isEnabledFor(logging.INFO)
    setup_logging(1)
    assert [h.level for h in root.handlers if getattr(h, "_blast_console", False)] == [logging.DEBUG]
    assert logging.getLogger("ray.data").level == logging.INFO
    setup_logging(-1)
    assert [h.level for h in root.handlers if getattr(h, "_blast_console", False)] == [logging.WARNING]
    setup_logging(0)


def test_exit_codes_and_one_line_errors(capsys):
    parser = argparse.ArgumentParser(prog="x")

    def raises(exc):
        def body(_args):
            raise exc
        return body

    assert main_wrapper(lambda a: 0, parser, []) == 0
    assert main_wrapper(lambda a: 1, parser, []) == 1
    assert main_wrapper(raises(ConfigError("config key 'train.lr': must be > 0")), parser, []) == 2
    assert capsys.readouterr().err == "x: config key 'train.lr': must be > 0\n"
    assert main_wrapper(raises(RuntimeError("boom\nsecond line")), parser, []) == 1
    err = capsys.readouterr().err
    assert err.startswith("x: RuntimeError: boom (run with -v") and "Traceback" not in err and err.count("\n") == 1
    assert main_wrapper(raises(KeyboardInterrupt()), parser, []) == 130
    assert main_wrapper(lambda a: 0, parser, ["--bogus"]) == 2  # argparse's usage error


def test_missing_config_says_where_configs_are(capsys, tmp_path):
    assert main(["config", "validate", "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("blast: config file") and "configs/ folder" in err and err.count("\n") == 1


def test_config_validate_and_show_sources(smoke_cfg, capsys, tmp_path):
    assert main(["config", "validate", "--config", str(smoke_cfg)]) == 0
    assert "valid (dataset ml-100k" in capsys.readouterr().out
    assert main(["config", "validate", "--config", str(smoke_cfg), "--set", "train.epochz=3"]) == 2
    assert capsys.readouterr().err.startswith("blast: config key 'train.epochz': unknown key")
    assert main(["config", "show", "--config", str(smoke_cfg), "--set", "train.lr=0.01",
                 "--store", str(tmp_path / "other"), "-q"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()
            if line and not line.startswith(("#", "["))}
    assert rows["train.lr"][1:] == ["0.01", "--set"]
    assert rows["train.epochs"][-1] == "yaml"  # smoke_config writes it
    assert rows["dataset.name"][1:] == ['"ml-100k"', "yaml"]
    assert rows["etl.master"][-1] == "default"
    assert rows["store"][1:] == [f'"{tmp_path / "other"}"', "--store"]
    # every key of the resolved config is listed
    from blast_ray.config import load_config

    def leaves(d, pre=""):
        for k, v in d.items():
            key = f"{pre}.{k}" if pre else k
            yield from (leaves(v, key) if isinstance(v, dict) and v else [key])

    assert set(leaves(load_config(smoke_cfg).to_dict())) == set(rows)


def test_run_dry_run_plans_without_running(smoke_cfg, capsys, tmp_path):
    from blast_ray.config import load_config
    from blast_ray.dry_run import plan_run
    from blast_ray.pipeline import STAGE_SPECS, StageContext, resolve_output
    from blast_ray.store import ArtifactStore

    store_dir = tmp_path / "store"
    assert main(["run", "--config", str(smoke_cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("dry run: dataset ml-100k")
    actions = {line.split()[0]: line.split()[1] for line in out[2:]}
    assert actions == {s: "run" for s in STAGES}
    assert not (store_dir / "ml-100k" / "stages").exists() and not (store_dir / "ml-100k" / "runs").exists()

    # Commit an ETL output under the fingerprint the run would use: the plan now skips it.
    cfg = load_config(smoke_cfg)
    ctx = StageContext(cfg=cfg, store=ArtifactStore(cfg.store), run_id="t")
    etl = resolve_output(ctx, STAGE_SPECS["etl"])
    etl.begin()
    etl.commit(row_counts={"interactions": 1})
    plan = {p.stage: p for p in plan_run(cfg)}
    assert plan["etl"].action == "skip" and plan["etl"].fingerprint == etl.fingerprint
    assert plan["profiles"].action == "run"
    plan = {p.stage: p for p in plan_run(cfg, force=("etl",))}
    assert plan["etl"].action == "run" and "forced" in plan["etl"].reason
    # `blast train --dry-run`: upstream stages come from the store; etl is there, profiles is not.
    assert main(["train", "--config", str(smoke_cfg), "--dry-run"]) == 0
    actions = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[2:]}
    assert actions["etl"] == "use-committed" and actions["profiles"] == "missing"
    assert actions["train"] == "run" and actions["evaluate"] == "not-selected"


def test_runs_show_summary_and_closed_pipe(tmp_path):
    from blast_ray.store import ArtifactStore

    store = ArtifactStore(str(tmp_path))
    big = {f"key{i}": "x" * 200 for i in range(2000)}  # > a pipe buffer: the writer meets EPIPE
    store.write_json({"run_id": "r1", "dataset": "d", "status": "succeeded", "started_at": "2026-01-01",
                      "metrics": {"evaluate": {"valid.recall@20": 0.25, "test.recall@20": 0.2}},
                      "stages": {"train": {"status": "ran", "fingerprint": "abc", "timings": {"total_s": 3.0}}},
                      "config": big}, "d", "runs", "r1", "run.json")
    cmd = f"{sys.executable} -m blast_ray.cli runs show r1 --store {tmp_path} --dataset d"
    res = subprocess.run(["bash", "-c", f"{cmd} --json | head -1; exit ${{PIPESTATUS[0]}}"],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert res.stdout == "{\n" and "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr
    assert res.returncode == 0
    res = subprocess.run(["bash", "-c", cmd], env=ENV, capture_output=True, text=True, timeout=120)
    lines = res.stdout.splitlines()
    assert res.returncode == 0 and lines[0].startswith("run r1  succeeded")
    assert lines[2].split() == ["metric", "valid", "test"] and lines[4].split() == ["recall@20", "0.2500", "0.2000"]
    assert len(lines) < 20  # the summary, not the record


def test_job_launchers_in_the_checkout():
    from jobs import nightly, pipeline
    from spark import etl_job

    import blast_ray.jobs.etl
    import blast_ray.jobs.nightly
    import blast_ray.jobs.pipeline

    assert pipeline.main is blast_ray.jobs.pipeline.main and etl_job.main is blast_ray.jobs.etl.main
    assert nightly.run_nightly is blast_ray.jobs.nightly.run_nightly
    for argv in (["-m", "jobs.pipeline", "--help"], ["-m", "jobs.nightly", "--help"], [str(ROOT / "spark" / "etl_job.py"), "--help"]):
        res = subprocess.run([sys.executable, *argv], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and "--config" in res.stdout and "-v, --verbose" in res.stdout, argv
    res = subprocess.run([sys.executable, "-m", "jobs.pipeline", "--config", "missing.yaml"], env=ENV, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("python -m jobs.pipeline: config file missing.yaml")


def test_wheel_installs_only_the_blast_ray_namespace(tmp_path):
    """Built from a copy of the tracked files (a wheel build writes build/ into its source tree)."""
    import shutil

    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / "src"
    for f in files:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "w"), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "deprecated" not in res.stderr.lower(), res.stderr  # no setuptools licence-table banner
    (whl,) = (tmp_path / "w").glob("blast_ray-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"blast_ray", f"blast_ray-{__version__}.dist-info"}, tops
    assert "blast_ray/jobs/pipeline.py" in names and "blast_ray/jobs/nightly.py" in names and "blast_ray/jobs/etl.py" in names
    assert f"blast_ray-{__version__}.dist-info/licenses/LICENSE" in names
    assert "blast_ray/etl/log4j2.properties" in names and "blast_ray/profiles/prompts/user_v1.txt" in names
    meta = zipfile.ZipFile(whl).read(f"blast_ray-{__version__}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in meta and "Requires-Python: >=3.11" in meta
    assert "Classifier: Programming Language :: Python :: 3.11" in meta
    entry = zipfile.ZipFile(whl).read(f"blast_ray-{__version__}.dist-info/entry_points.txt").decode()
    assert "blast = blast_ray.cli:main" in entry


def test_ray_data_console_quiet_off_a_terminal(monkeypatch):
    """Not a terminal (pytest captures stdout): no Ray Data progress bars, no execution plans, its
    console handler at WARNING and its 'Progress bars disabled' notice already spent."""
    import ray.data
    from ray.util.debug import log_once

    from blast_ray.runtime import quiet_ray_data

    monkeypatch.setenv("BLAST_LOG_LEVEL", "0")
    ctx = ray.data.DataContext.get_current()
    monkeypatch.setattr(ctx, "enable_progress_bars", True)
    monkeypatch.setattr(ctx, "print_on_execution_start", True)
    quiet_ray_data()
    assert ctx.enable_progress_bars is False and ctx.print_on_execution_start is False
    assert not log_once("ray_data_progress_manager_disabled")
    consoles = [h for h in logging.getLogger("ray.data").handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    assert consoles and all(h.level >= logging.WARNING for h in consoles)
    # a failed task's ERROR lines stay off the console: the driver's one line says it
    failed = logging.LogRecord("ray.data.exceptions", logging.ERROR, "x", 1, "Exception occurred in user code", None, None)
    warn = logging.LogRecord("ray.data.exceptions", logging.WARNING, "x", 1, "a warning", None, None)
    assert all(not h.filter(failed) and h.filter(warn) for h in consoles)


def test_recommend_user_needs_committed_recommendations(smoke_cfg, capsys):
    assert main(["recommend", "--config", str(smoke_cfg), "--user", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("blast: no committed recommendations for this config") and err.count("\n") == 1
