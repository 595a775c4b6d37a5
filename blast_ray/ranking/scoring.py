"""The one scoring rule: which known items are masked when ranking a split, and the metric that
selects a training epoch.

Masking rule (MMRec protocol): ranking for ``valid`` masks the user's train items; for ``test`` it
masks train + valid (a valid item is known at test time); for ``all`` (recommendations) it masks
every interaction the user has (train + valid + test). Every caller (the trainer's validation, the
evaluate stage, its baselines, the recommend stage) gets its mask from :func:`known_items`, so the
rule exists once.
"""

from __future__ import annotations

from dataclasses import dataclass

import scipy.sparse as sp
import torch

from blast_ray.ranking.metrics import METRICS, evaluate_ranking

MASKED_SPLITS = {"valid": ("train",), "test": ("train", "valid"), "all": ("train", "valid", "test")}


def known_items(data, split: str) -> sp.csr_matrix:
    """M x N CSR of the items never to rank when scoring ``split`` ('valid' | 'test' | 'all').

    ``data``: anything with ``train``/``valid``/``test`` M x N CSR matrices (InteractionData).
    """
    if split not in MASKED_SPLITS:
        raise ValueError(f"known_items: split must be one of {', '.join(MASKED_SPLITS)}, got {split!r}")
    parts = [getattr(data, s) for s in MASKED_SPLITS[split]]
    if len(parts) == 1:
        return sp.csr_matrix(parts[0])
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total.tocsr()


def score_split(h_u: torch.Tensor, f_i: torch.Tensor, data, split: str, ks, batch_users: int) -> dict[str, float]:
    """Full-ranking metrics of ``split`` ('valid' | 'test') for representations h_u (M, d), f_i (N, d),
    the known items of :func:`known_items` masked. Returns ``evaluate_ranking``'s dict."""
    if split not in ("valid", "test"):
        raise ValueError(f"score_split: split must be 'valid' or 'test', got {split!r}")
    return evaluate_ranking(h_u, f_i, getattr(data, split), known_items(data, split), tuple(ks), batch_users)


def score_splits(h_u: torch.Tensor, f_i: torch.Tensor, data, ks, batch_users: int) -> tuple[dict, dict]:
    """(valid, test) metrics of :func:`score_split`."""
    return (score_split(h_u, f_i, data, "valid", ks, batch_users),
            score_split(h_u, f_i, data, "test", ks, batch_users))


@dataclass(frozen=True)
class SelectMetric:
    """The validation metric that selects the best epoch and drives early stopping
    (``evaluate.select_metric``, e.g. ``recall@20``, ``ndcg@10``). Validation only, never test.

    >>> SelectMetric.parse("ndcg@10").key
    'ndcg@10'
    """

    name: str = "recall"
    k: int = 20

    @classmethod
    def parse(cls, text: str) -> "SelectMetric":
        name, _, k = str(text).partition("@")
        if name not in METRICS or not k.isdigit() or int(k) < 1:
            raise ValueError(f"evaluate.select_metric: {text!r} is not <metric>@<k> with metric one of "
                             f"{', '.join(METRICS)} and k >= 1 (e.g. recall@20)")
        return cls(name, int(k))

    @property
    def key(self) -> str:
        return f"{self.name}@{self.k}"
