"""Losses shared by the models (pure functions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """BPR: -mean log sigmoid(u.i - u.j). user/pos/neg: (B, d). Returns a scalar.

    >>> u = torch.ones(2, 3); bpr_loss(u, u, -u).item() < 0.01
    True
    """
    diff = (user * pos).sum(-1) - (user * neg).sum(-1)
    return -F.logsigmoid(diff).mean()


def l2_penalty(*tensors: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared L2 norms (the LightGCN/MMRec EmbLoss convention)."""
    batch = tensors[0].shape[0]
    return sum(t.pow(2).sum() for t in tensors) / (2 * batch)
