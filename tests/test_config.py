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


BASE = {"dataset": {"name": "x", "format": "mmrec_inter", "paths": {"inter": "/tmp/x.inter"}}}


def _with(**sections):
    return {**BASE, **sections}


@pytest.mark.parametrize(
    "data, key, hint",
    [
        ({"evaluate": {"select_metric": "recall@7"}}, "evaluate.select_metric", "K in evaluate.ks"),
        ({"evaluate": {"select_metric": "auc@20"}}, "evaluate.select_metric", "recall, ndcg"),
        ({"evaluate": {"ks": "5,10"}}, "evaluate.select_metric", "add K to evaluate.ks"),
        ({"evaluate": {"baselines": "pop,pop"}}, "evaluate.baselines", "twice"),
        # per-baseline training values: the key names the model, the message the fix
        ({"evaluate": {"baselines": ["pop"], "baseline_train": {"pop": {"lr": 0.01}}}},
         "evaluate.baseline_train.pop", "no training hyperparameters"),
        ({"evaluate": {"baselines": ["pop"], "baseline_train": {"blast": {}}}},
         "evaluate.baseline_train.blast", "trained baselines are bpr, lightgcn, freedom"),
        ({"evaluate": {"baselines": ["bpr"], "baseline_train": {"bpr": {"n_layers_ui": 2}}}},
         "evaluate.baseline_train.bpr.n_layers_ui", "it is lightgcn and freedom's"),
        ({"evaluate": {"baselines": ["lightgcn"], "baseline_train": {"lightgcn": {"prune_ratio": 0.5}}}},
         "evaluate.baseline_train.lightgcn.prune_ratio", "lightgcn has no prune_ratio; remove it"),
        ({"evaluate": {"baselines": ["lightgcn"], "baseline_train": {"lightgcn": {"lr": 0}}}},
         "evaluate.baseline_train.lightgcn.lr", "> 0"),
        ({"evaluate": {"baselines": ["lightgcn"], "baseline_train": {"lightgcn": {"learning_rate": 0.1}}}},
         "evaluate.baseline_train.lightgcn.learning_rate", "valid keys here are epochs, l2_weight, lr"),
        ({"evaluate": {"baselines": ["lightgcn"], "baseline_train": {"lightgcn": 0.01}}},
         "evaluate.baseline_train.lightgcn", "must be a mapping"),
        ({"augment": {"row_target": "popular"}}, "augment.row_target", "mean_activity, activity, uniform or a positive number"),
        ({"augment": {"col_target": 0}}, "augment.col_target", "mean_popularity, popularity, uniform or a positive number"),
        ({"train": {"epochs": True}}, "train.epochs", "integer"),
        ({"train": {"progress": "yes"}}, "train.progress", "true, false or auto"),
        ({"etl": {"split": "0.5,0.5"}}, "etl.split", "three"),
        ({"profiles": {"engine": "http"}}, "profiles.endpoint", "base URL"),
        ({"features": {"image_dir": "imgs"}}, "features.image_dir", "compute_image_features"),
        ({"dataset": {**BASE["dataset"], "name": "a/b"}}, "dataset.name", "letters, digits"),
        ({"dataset": {**BASE["dataset"], "name": ".."}}, "dataset.name", "letters, digits"),
        ({"dataset": {**BASE["dataset"], "name": ".hidden"}}, "dataset.name", "starting with a letter or digit"),
        ({"dataset": {"name": "x"}}, "dataset.format", "one of"),
    ],
)
def test_rules_name_the_key_and_the_fix(data, key, hint):
    with pytest.raises(ConfigError) as e:
        config_from_dict(_with(**data))
    msg = str(e.value)
    assert msg.startswith(f"config key '{key}': ") and hint in msg and "\n" not in msg, msg


def test_yaml_strings_and_overrides_coerce():
    cfg = config_from_dict(_with(
        evaluate={"ks": "5,10", "select_metric": "ndcg@10", "baselines": ""},
        train={"use_gpu": "true", "lr": "1e-3", "progress": "False"},
        augment={"row_target": "2.5", "col_target": "uniform"},
        etl={"split": "0.7,0.2,0.1"},
        dataset={**BASE["dataset"], "name": "amazon-baby_2018.v1"},
    ))
    assert cfg.evaluate.ks == (5, 10) and cfg.evaluate.baselines == ()
    assert cfg.train.use_gpu is True and cfg.train.lr == 0.001 and cfg.train.progress is False
    assert cfg.augment.row_target == 2.5 and cfg.augment.col_target == "uniform"
    assert cfg.etl.split == (0.7, 0.2, 0.1)
    cfg = load_config(CONFIGS[0], overrides=["evaluate.ks=5,10", "evaluate.select_metric=recall@10",
                                             "augment.row_target=uniform"])
    assert cfg.evaluate.ks == (5, 10) and cfg.augment.row_target == "uniform"


def test_validated_on_construction_assignment_and_update():
    from blast_ray.config import EvaluateConfig, TrainConfig

    with pytest.raises(ConfigError, match=r"^config key 'train\.epochs': must be >= 1"):
        TrainConfig(epochs=0)
    cfg = config_from_dict(BASE)
    with pytest.raises(ConfigError, match=r"^config key 'train\.lr'"):
        cfg.train.lr = -1.0
    with pytest.raises(ConfigError, match=r"evaluate\.select_metric"):
        cfg.evaluate.ks = (5, 10)  # recall@20 would no longer be computed
    assert cfg.train.lr == 1e-3 and cfg.evaluate.ks == (5, 10, 20, 50)  # a rejected assignment leaves no trace
    cfg.train.epochs = "7"
    assert cfg.train.epochs == 7

    new = cfg.updated(train={"model": "bpr"}, store="/tmp/elsewhere")
    assert (new.train.model, new.store, new.train.epochs) == ("bpr", "/tmp/elsewhere", 7)
    assert cfg.train.model == "blast" and cfg.store != "/tmp/elsewhere"  # the original is unchanged
    new.dataset.paths["extra"] = "/tmp/y"
    assert "extra" not in cfg.dataset.paths  # the copy shares no container
    with pytest.raises(ConfigError, match=r"train\.modle': unknown key"):
        cfg.updated(train={"modle": "bpr"})
    with pytest.raises(ConfigError, match=r"evaluate\.select_metric"):
        EvaluateConfig().updated(ks=[5])
    # in-place edits of a container are not seen by assignment validation; validate() catches them
    assert cfg.validate() is cfg
    cfg.dataset.paths["meta"] = None
    with pytest.raises(ConfigError, match=r"^config key 'dataset\.paths\.meta': must be a string"):
        cfg.validate()


def test_select_metric_names_are_the_computed_metrics():
    from blast_ray.config import RANKING_METRICS
    from blast_ray.ranking.metrics import METRICS

    assert tuple(RANKING_METRICS) == tuple(METRICS)


def test_hash_is_stable_over_equal_values():
    from blast_ray.config import TrainConfig
    from blast_ray.store.hashing import stable_hash, to_plain

    a = TrainConfig(lr=0.001, epochs=3)
    assert stable_hash(a) == stable_hash(TrainConfig(lr="1e-3", epochs="3")) == stable_hash(to_plain(a))
    assert stable_hash(a) == stable_hash(a.model_dump()) and stable_hash(a) != stable_hash(TrainConfig(lr=0.002, epochs=3))
    cfg = load_config(CONFIGS[0])
    assert stable_hash(cfg.to_dict()) == stable_hash(cfg) == stable_hash(cfg.updated())
    assert to_plain({"ks": (5, 10)}) == {"ks": [5, 10]}


def test_baseline_train_overrides_the_train_section_per_baseline():
    """evaluate.baseline_train.<model> gives a trained baseline its own (tuned) values; keys left out
    keep the train section's; --set reaches them; the shipped ml-100k config carries tuned values."""
    cfg = config_from_dict(_with(
        train={"lr": 0.001, "l2_weight": 0.0, "n_layers_ui": 2, "epochs": 40, "warm_start_from": "/x"},
        evaluate={"baselines": ["pop", "bpr", "lightgcn"],
                  "baseline_train": {"lightgcn": {"lr": 0.009, "n_layers_ui": 3}, "bpr": {"l2_weight": 1.0e-4}}},
    ))
    lg = cfg.evaluate.baseline_train_config("lightgcn", cfg.train)
    assert (lg.model, lg.lr, lg.n_layers_ui, lg.l2_weight, lg.epochs, lg.warm_start_from) == ("lightgcn", 0.009, 3, 0.0, 40, None)
    bpr = cfg.evaluate.baseline_train_config("bpr", cfg.train)
    assert (bpr.model, bpr.lr, bpr.l2_weight) == ("bpr", 0.001, 1.0e-4)
    assert cfg.train.lr == 0.001 and cfg.train.model == "blast"  # the main model is untouched
    # an entry of a model not in evaluate.baselines stays valid (unused): quick runs keep the config
    assert config_from_dict(_with(evaluate={"baselines": ["pop"], "baseline_train": {"bpr": {"lr": 0.01}}}))
    over = load_config(CONFIGS[0], overrides=["evaluate.baselines=pop,lightgcn", "evaluate.baseline_train.lightgcn.lr=0.02"])
    assert over.evaluate.baseline_train["lightgcn"].lr == 0.02
    ml = load_config(Path(__file__).parent.parent / "configs" / "ml-100k.yaml")
    assert set(ml.evaluate.baseline_train) == {"bpr", "lightgcn", "freedom"} <= set(ml.evaluate.baselines)
    fr = ml.evaluate.baseline_train_config("freedom", ml.train)
    assert set(ml.evaluate.baseline_train["freedom"].train_changes()) == {
        "lr", "l2_weight", "n_layers_ui", "n_layers_ii", "prune_ratio", "reg_weight"}
    assert fr.model == "freedom" and fr.n_layers_ii == 0 and fr.embedding_dim == ml.train.embedding_dim
    assert set(ml.evaluate.baseline_train["lightgcn"].train_changes()) == {"lr", "l2_weight", "n_layers_ui"}
    assert set(ml.evaluate.baseline_train["bpr"].train_changes()) == {"lr", "l2_weight"}
