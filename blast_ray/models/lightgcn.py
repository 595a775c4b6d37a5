"""LightGCN (He et al. 2020): H_UI = mean_{l=0..L} A^l [Z_U; Z_I]."""

from __future__ import annotations

from typing import Any

import torch

from blast_ray.models.bpr import BPRMF, GraphInputs


def lightgcn_propagate(g: GraphInputs, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """mean over l = 0..n_layers of A^l ego, A = g.ui (the normalized user-item adjacency)."""
    if n_layers == 0 or g.ui is None:
        return ego
    # The sum is kept in one buffer (the first add makes it, the rest are in place: an add's backward
    # needs neither operand): at dump scale every whole-table temporary is 400 MB of fresh pages
    # per step (docs/SCALING.md). Same floats as (ego + h_1 + ... + h_L) / (L + 1).
    h = g.backend.spmm(g.ui, ego)
    acc = ego + h
    for _ in range(n_layers - 1):
        h = g.backend.spmm(g.ui, h)
        acc.add_(h)
    return acc.div_(n_layers + 1)


def split_users_items(h: torch.Tensor, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(h[:n_users], h[n_users:]) as one split: its backward writes the two gradients into one
    table, where two slices would each zero-fill a whole-table gradient and then sum them."""
    h_u, f_i = torch.split(h, [n_users, h.shape[0] - n_users])
    return h_u, f_i


class LightGCN(BPRMF):
    """LightGCN on the user-item graph passed at call time (``g.ui``)."""

    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 64, n_layers_ui: int = 2, **kw: Any):
        super().__init__(n_users, n_items, embedding_dim, **kw)
        self.n_layers_ui = n_layers_ui

    def representations(self, g: GraphInputs) -> tuple[torch.Tensor, torch.Tensor]:
        h = lightgcn_propagate(g, torch.cat([self.user_emb, self.item_emb]), self.n_layers_ui)
        return split_users_items(h, self.n_users)
