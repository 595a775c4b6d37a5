"""BLAST (method section 3): pruned user-item LightGCN + frozen item-item S_I + user-user S_U,
sum fusion, BPR plus auxiliary feature BPR terms.

f_i = S_I^{L_II} Z_I [i] + H_UI[i];  h_u = S_U^{L_UU} Z_U [u] + H_UI[u];  y_ui = h_u . f_i.
Loss = BPR(h, f) + reg_weight * sum_m BPR(h_u, W_m x_i^m, W_m x_j^m)
       + user_reg_weight * BPR(W_u y_u, f_i, f_j).
Missing graphs/features drop their term (ID-only when none: logged by the trainer).
``n_layers_ii = 0`` (``n_layers_uu = 0``) turns the item (user) graph branch OFF rather than adding
Z_I (Z_U) once more, so that BLAST with both at 0, ``prune_ratio = 0``, no auxiliary terms and no OT
pair IS LightGCN with the BPR loss: the simpler model every tuning space must contain.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from blast_ray.models.bpr import GraphInputs
from blast_ray.models.lightgcn import LightGCN, lightgcn_propagate, split_users_items
from blast_ray.models.losses import bpr_loss

ITEM_MODALITIES = ("item_text", "item_visual")


class BLAST(LightGCN):
    use_user_graph = True

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int = 64,
        n_layers_ui: int = 2,
        n_layers_ii: int = 1,
        n_layers_uu: int = 1,
        reg_weight: float = 0.01,
        user_reg_weight: float = 0.01,
        feature_dims: dict[str, int] | None = None,
        **kw: Any,
    ):
        super().__init__(n_users, n_items, embedding_dim, n_layers_ui, **kw)
        self.n_layers_ii, self.n_layers_uu = n_layers_ii, n_layers_uu
        self.reg_weight, self.user_reg_weight = reg_weight, user_reg_weight
        feature_dims = dict(feature_dims or {})
        if not self.use_user_graph:
            feature_dims.pop("user_text", None)
        # One Linear(dim -> d) per available feature (only those: DDP needs every parameter used).
        self.projections = nn.ModuleDict({name: nn.Linear(dim, embedding_dim) for name, dim in sorted(feature_dims.items())})

    def representations(self, g: GraphInputs) -> tuple[torch.Tensor, torch.Tensor]:
        h = lightgcn_propagate(g, torch.cat([self.user_emb, self.item_emb]), self.n_layers_ui)
        h_u, f_i = split_users_items(h, self.n_users)
        if g.ii is not None and self.n_layers_ii > 0:
            hi = self.item_emb
            for _ in range(self.n_layers_ii):
                hi = g.backend.spmm(g.ii, hi)
            f_i = f_i + hi
        if self.use_user_graph and g.uu is not None and self.n_layers_uu > 0:
            hu = self.user_emb
            for _ in range(self.n_layers_uu):
                hu = g.backend.spmm(g.uu, hu)
            h_u = h_u + hu
        return h_u, f_i

    def extra_loss(self, g, h_u, f_i, users, pos, neg, gathered) -> torch.Tensor:
        loss = h_u.new_zeros(())
        u, f_pos, f_neg = gathered  # the BPR term's rows, reused: each gather's backward is a whole-table gradient
        for name in ITEM_MODALITIES:
            if name in self.projections and name in g.features:
                x = g.features[name]
                w = self.projections[name]
                loss = loss + self.reg_weight * bpr_loss(u, w(x[pos]), w(x[neg]))
        if "user_text" in self.projections and "user_text" in g.features:
            yu = self.projections["user_text"](g.features["user_text"][users])
            loss = loss + self.user_reg_weight * bpr_loss(yu, f_pos, f_neg)
        return loss
