"""The model factory: which side inputs each model uses, and building a model from the train config.

Plain arguments only (counts, feature names/dims), so the models package depends on nothing above it.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from blast_ray.models import MODELS

GRAPH_MODELS = ("lightgcn", "freedom", "blast")  # propagate over the user-item graph A
PRUNED_MODELS = ("freedom", "blast")  # prune A each epoch and use side inputs (features, kNN graphs)


def used_modalities(model: str, feature_names: Iterable[str], has_item_graph: bool, has_user_graph: bool) -> dict[str, Any]:
    """Which side inputs ``model`` uses among those available: {"features": [names], "item_graph",
    "user_graph"} (bpr/lightgcn: none; freedom: item features + S_I; blast: also user_text + S_U).

    >>> used_modalities("freedom", ["user_text", "item_text"], True, True)
    {'features': ['item_text'], 'item_graph': True, 'user_graph': False}
    """
    if model not in PRUNED_MODELS:
        return {"features": [], "item_graph": False, "user_graph": False}
    feats = [f for f in sorted(feature_names) if f != "user_text" or model == "blast"]
    return {"features": feats, "item_graph": bool(has_item_graph), "user_graph": model == "blast" and bool(has_user_graph)}


def build_model(cfg, n_users: int, n_items: int, feature_dims: dict[str, int] | None = None) -> torch.nn.Module:
    """A fresh ``cfg.model`` (a TrainConfig: model, embedding_dim, layer counts, loss weights) for
    ``n_users`` x ``n_items``; ``feature_dims``: name -> dim of the side features the model uses
    (see :func:`used_modalities`). Initialisation draws from torch's global RNG (seed it first)."""
    return MODELS[cfg.model](
        n_users,
        n_items,
        embedding_dim=cfg.embedding_dim,
        n_layers_ui=cfg.n_layers_ui,
        n_layers_ii=cfg.n_layers_ii,
        n_layers_uu=cfg.n_layers_uu,
        reg_weight=cfg.reg_weight,
        user_reg_weight=cfg.user_reg_weight,
        l2_weight=cfg.l2_weight,
        feature_dims=dict(feature_dims or {}),
    )
