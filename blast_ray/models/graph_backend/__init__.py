"""Graph propagation backends: ``A @ x`` for a sparse A, behind one small interface.

Interface (shared contract): ``get_backend(name) -> GraphBackend`` with ``.name``,
``.build(rows, cols, values, shape, device, symmetric=False) -> handle`` (symmetric: the caller
guarantees A == A^T, so a backend may reuse A for the backward product) and ``.spmm(handle, x) -> Tensor``
(``handle @ x``, differentiable w.r.t. x). ``torch`` = torch.sparse CSR (default, always here);
``dgl`` = DGL message passing (only in ``.venv-dgl``; imported lazily); ``auto`` picks DGL when it
imports, else torch.

Example
-------
>>> import torch
>>> b = get_backend("torch")
>>> h = b.build(torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1]), torch.tensor([0.5, 2.0, 1.0]), (2, 2), "cpu")
>>> b.spmm(h, torch.tensor([[1.0], [3.0]])).flatten().tolist()
[1.5, 5.0]
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Protocol

import torch

from blast_ray.models.graph_backend.torch_backend import TorchBackend

log = logging.getLogger(__name__)
# the same line once per process, not once per model built; DEBUG: the train stage's INFO line names the backend
_debug_once = functools.cache(log.debug)

__all__ = ["GraphBackend", "TorchBackend", "get_backend"]


class GraphBackend(Protocol):
    name: str

    def build(
        self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int], device: Any,
        symmetric: bool = False,
    ) -> Any: ...

    def spmm(self, handle: Any, x: torch.Tensor) -> torch.Tensor: ...


def get_backend(name: str = "auto") -> GraphBackend:
    """The backend called ``name``: "torch", "dgl" (ImportError when DGL is absent) or "auto"."""
    if name == "torch":
        return TorchBackend()
    if name in ("dgl", "auto"):
        from blast_ray.models.graph_backend import dgl_backend  # lazy: DGL lives in .venv-dgl only

        if name == "dgl":
            return dgl_backend.DGLBackend()
        if dgl_backend.dgl_available():
            log.info("graph backend auto -> dgl")
            return dgl_backend.DGLBackend()
        _debug_once("graph backend auto -> torch (DGL does not import here)")
        return TorchBackend()
    raise ValueError(f"graph backend must be 'auto', 'torch' or 'dgl', got {name!r}")
