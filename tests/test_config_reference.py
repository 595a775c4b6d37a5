"""docs/CONFIG.md is generated from the config schema (blast_ray/config/reference.py) and kept in sync."""

from __future__ import annotations

import io
from pathlib import Path

from blast_ray.config import PipelineConfig
from blast_ray.config.reference import REFERENCE_PATH, config_reference
from blast_ray.config.schema import ConfigModel

ROOT = Path(__file__).resolve().parent.parent


def test_config_md_is_up_to_date_with_the_schema():
    committed = (ROOT / REFERENCE_PATH).read_text(encoding="utf-8")
    assert committed == config_reference(), (
        "docs/CONFIG.md is out of date with blast_ray/config/schema.py: run `blast config keys --write` "
        "(or `python -m blast_ray.config.reference`) and commit the result")


def test_reference_lists_every_key_with_type_default_and_constraint():
    text = config_reference()
    cfg = PipelineConfig()
    for section, model in cfg:
        if isinstance(model, ConfigModel):
            for key in type(model).model_fields:
                assert f"| `{section}.{key}` |" in text, f"{section}.{key} missing from the reference"
    row = next(line for line in text.splitlines() if line.startswith("| `train.epochs` |"))
    assert "| int | `1000` | >= 1 |" in row
    row = next(line for line in text.splitlines() if line.startswith("| `train.prune_ratio` |"))
    assert ">= 0, < 1" in row and "removed each epoch" in row
    row = next(line for line in text.splitlines() if line.startswith("| `recommend.num_actors` |"))
    assert "raise it on a cluster" in row  # a source comment becomes the description


def test_blast_config_keys_prints_and_writes(tmp_path):
    from blast_ray.cli import config_command, build_parser

    args = build_parser().parse_args(["config", "keys"])
    buf = io.StringIO()
    assert config_command(args, out=buf) == 0 and buf.getvalue() == config_reference()
    (tmp_path / "docs").mkdir()
    args = build_parser().parse_args(["config", "keys", "--write", str(tmp_path)])
    assert config_command(args, out=io.StringIO()) == 0
    assert (tmp_path / REFERENCE_PATH).read_text() == config_reference()
