"""LightGCN (He et al. 2020): H_UI = mean_{l=0..L} A^l [Z_U; Z_I]."""

from __future__ import annotations

from typing import Any

import torch

from blast_ray.models.bpr import BPRMF, GraphInputs


def lightgcn_propagate(g: GraphInputs, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """mean over l = 0..n_layers of A^l ego, A = g.ui (the normalized user-item adjacency)."""
    if n_layers == 0 or g.ui is None:
        return ego
    acc, h = ego, ego
    for _ in range(n_layers):
        h = g.backend.spmm(g.ui, h)
        acc = acc + h
    return acc / (n_layers + 1)


class LightGCN(BPRMF):
    """LightGCN on the user-item graph passed at call time (``g.ui``)."""

    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 64, n_layers_ui: int = 2, **kw: Any):
        super().__init__(n_users, n_items, embedding_dim, **kw)
        self.n_layers_ui = n_layers_ui

    def representations(self, g: GraphInputs) -> tuple[torch.Tensor, torch.Tensor]:
        h = lightgcn_propagate(g, torch.cat([self.user_emb, self.item_emb]), self.n_layers_ui)
        return h[: self.n_users], h[self.n_users :]
