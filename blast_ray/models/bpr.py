"""BPR-MF: score = z_u . z_i, trained with BPR (Rendle et al. 2009)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from blast_ray.models.losses import bpr_loss, l2_penalty


@dataclass
class GraphInputs:
    """What the models get at call time (PyG style: graphs are not stored in the module).

    backend: a GraphBackend; ui: handle of the (pruned or full) normalized user-item adjacency
    ((M+N) x (M+N)); ii: handle of S_I (N x N) or None; uu: handle of S_U (M x M) or None;
    features: name -> float tensor (rows in idx order), e.g. item_text (N, d_t), user_text (M, d_u).
    """

    backend: Any = None
    ui: Any = None
    ii: Any = None
    uu: Any = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)


class BPRMF(nn.Module):
    """Matrix factorisation with ID embeddings (Xavier init). No heavy compute in __init__."""

    def __init__(self, n_users: int, n_items: int, embedding_dim: int = 64, l2_weight: float = 0.0, **_: Any):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, embedding_dim)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, embedding_dim)))
        self.l2_weight = l2_weight

    def representations(self, g: GraphInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_u (M, d), f_i (N, d)): the final representations scored by dot product."""
        return self.user_emb, self.item_emb

    def forward(self, g: GraphInputs, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """BPR loss of the triples (u, i, j) (forward = loss so DDP can wrap the model)."""
        h_u, f_i = self.representations(g)
        u, i, j = h_u[users], f_i[pos], f_i[neg]
        loss = bpr_loss(u, i, j)
        if self.l2_weight:
            loss = loss + self.l2_weight * l2_penalty(self.user_emb[users], self.item_emb[pos], self.item_emb[neg])
        return loss + self.extra_loss(g, h_u, f_i, users, pos, neg, (u, i, j))

    def extra_loss(self, g, h_u, f_i, users, pos, neg, gathered) -> torch.Tensor:
        """Terms added to the BPR loss by subclasses; ``gathered`` = (h_u[users], f_i[pos], f_i[neg])."""
        return h_u.new_zeros(())
