from pathlib import Path

import pytest

from blast_ray.config import ConfigError, PipelineConfig, config_from_dict, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.dataset.name
    assert all(Path(p).is_absolute() or "://" in p for p in cfg.dataset.paths.values())


def test_shipped_configs_cover_the_required_datasets():
    names = {p.stem for p in CONFIGS}
    assert {"ml-100k", "amazon-scientific", "amazon-baby", "amazon-sports"} <= names


def test_shared_dataset_configs_point_at_existing_files(data_dir):
    for name in ("amazon-baby", "amazon-sports", "amazon-scientific"):
        cfg = load_config(Path(__file__).parent.parent / "configs" / f"{name}.yaml")
        for role, p in cfg.dataset.paths.items():
            assert Path(p).exists(), f"{name}: {role} -> {p} missing"


def test_overrides_are_typed():
    cfg = load_config(CONFIGS[0], overrides=["train.epochs=3", "train.lr=0.01", "augment.enabled=false"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == 0.01
    assert cfg.augment.enabled is False


@pytest.mark.parametrize(
    "data, key",
    [
        ({"train": {"epochz": 3}}, "train.epochz"),
        ({"train": {"epochs": "many"}}, "train.epochs"),
        ({"train": {"prune_ratio": 1.5}}, "train.prune_ratio"),
        ({"train": {"model": "gpt"}}, "train.model"),
        ({"augment": {"eps": 0}}, "augment.eps"),
        ({"etl": {"split": [0.5, 0.5, 0.5]}}, "etl.split"),
        ({"dataset": {"name": "x", "format": "csv", "paths": {"a": "b"}}}, "dataset.format"),
        ({"stages": ["etl", "fly"]}, "stages"),
    ],
)
def test_bad_values_name_the_key(data, key):
    base = {"dataset": {"name": "x", "format": "mmrec_inter", "paths": {"inter": "/tmp/x.inter"}}}
    for section, values in data.items():
        base.setdefault(section, {}) if isinstance(values, dict) else None
        if isinstance(values, dict) and isinstance(base.get(section), dict):
            base[section] = {**base[section], **values}
        else:
            base[section] = values
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace(".", r"\.")):
        config_from_dict(base)


def test_missing_config_file_is_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_fingerprinted_config_leaves_out_run_only_keys():
    """train.progress / max_failures change how training runs, not what it writes; evaluate's
    baselines do not touch the train output; train.lr and evaluate.ks do."""
    from blast_ray.pipeline import STAGE_SPECS, stage_config

    ml = Path(__file__).parent.parent / "configs" / "ml-100k.yaml"
    base = load_config(ml)
    spec = STAGE_SPECS["train"]
    same = load_config(ml, overrides=["train.progress=true", "train.max_failures=3",
                                                           "evaluate.baselines=[pop]"])
    assert stage_config(same, spec) == stage_config(base, spec)
    for change in ("train.lr=0.01", "evaluate.ks=[10,20]"):
        assert stage_config(load_config(ml, overrides=[change]), spec) != stage_config(base, spec), change
