"""DGL graph backend: sparse propagation ``A @ x`` as DGL message passing.

The product's design names DGL for graph propagation (``dgl.graph`` + ``update_all`` /
``dgl.ops.gspmm`` with edge weights). This module implements the shared backend interface
(``name``, ``build``, ``spmm``) on top of DGL so that the models can run on either this backend
or the torch.sparse one (``torch_backend.py``) unchanged; ``tests/test_graph_backend_parity.py``
checks that both give the same outputs and gradients.

DGL's newest Linux wheel (2.1.0) loads only with torch 2.0-2.2.1, so DGL is NOT installed in the
main environment (torch 2.13): it lives in ``.venv-dgl`` (``make dgl-env``). ``dgl`` is therefore
imported lazily, and importing this module never fails; :func:`dgl_available` says whether the
backend can run here.

Mapping of a sparse matrix onto a DGL graph: ``A[r, c] = v`` becomes an edge ``c -> r`` with
weight ``v``; ``u_mul_e_sum`` then computes ``out[r] = sum_c v * x[c]``, i.e. ``A @ x``. A square
``A`` (the user-item adjacency, the item-item kNN graph) becomes a homogeneous ``dgl.graph``; a
rectangular one (e.g. the users x items matrix R) becomes a one-relation bipartite graph
(``dgl.heterograph`` with a ``col`` source type and a ``row`` destination type).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch

log = logging.getLogger(__name__)

#: How ``spmm`` runs the propagation. Both call the same fused DGL SpMM kernel; ``update_all``
#: goes through DGL's message-passing API (builtin message + reduce functions).
DGLMode = Literal["gspmm", "update_all"]

_INT32_MAX = 2**31 - 1


def dgl_available() -> bool:
    """True when ``import dgl`` works in this environment (it does in ``.venv-dgl`` only)."""
    try:
        _import_dgl()
    except ImportError as exc:  # _import_dgl re-raises any failure (e.g. an OSError from libdgl) as ImportError
        log.debug("dgl does not import here: %s", exc)
        return False
    return True


def _import_dgl():
    # Without DGLBACKEND, DGL prints a notice and writes ~/.dgl/config.json on first import.
    os.environ.setdefault("DGLBACKEND", "pytorch")
    try:
        import dgl
    except Exception as exc:
        raise ImportError(
            "graph backend 'dgl' needs DGL, which needs torch<=2.2.1 and is only installed in the "
            f"DGL environment (make dgl-env; .venv-dgl/bin/python). Import failed: {exc}"
        ) from exc
    return dgl


@dataclass
class DGLGraphHandle:
    """A built sparse matrix for :meth:`DGLBackend.spmm`.

    graph: the DGL graph (edge ``c -> r`` per non-zero ``A[r, c]``);
    weights: float tensor of shape (nnz,), the values of A in the graph's edge order;
    shape: (n_rows, n_cols) of A; bipartite: True when ``graph`` is the two-node-type form.
    """

    graph: Any
    weights: torch.Tensor
    shape: tuple[int, int]
    bipartite: bool

    @property
    def nnz(self) -> int:
        return int(self.weights.shape[0])


class DGLBackend:
    """Sparse-dense products ``A @ x`` through DGL message passing.

    Parameters
    ----------
    mode: "gspmm" (default) calls ``dgl.ops.u_mul_e_sum``; "update_all" runs
        ``graph.update_all(fn.u_mul_e, fn.sum)``. Same result, same kernel; the second is the
        message-passing API for readers who know DGL from its tutorials.

    Example (in .venv-dgl)
    ----------------------
    >>> import torch
    >>> b = DGLBackend()
    >>> rows, cols = torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1])
    >>> h = b.build(rows, cols, torch.tensor([0.5, 2.0, 1.0]), (2, 2), "cpu")
    >>> b.spmm(h, torch.tensor([[1.0], [3.0]])).flatten().tolist()
    [1.5, 5.0]
    """

    name = "dgl"

    def __init__(self, mode: DGLMode = "gspmm") -> None:
        if mode not in ("gspmm", "update_all"):
            raise ValueError(f"DGLBackend.mode must be 'gspmm' or 'update_all', got {mode!r}")
        self.mode = mode
        self._dgl = _import_dgl()

    def __repr__(self) -> str:
        return f"DGLBackend(mode={self.mode!r}, dgl={self._dgl.__version__})"

    def build(
        self,
        rows: torch.Tensor,
        cols: torch.Tensor,
        values: torch.Tensor,
        shape: tuple[int, int],
        device: torch.device | str = "cpu",
        symmetric: bool = False,
    ) -> DGLGraphHandle:
        """Build the DGL graph of the sparse matrix ``A`` (``A[rows[e], cols[e]] = values[e]``).

        rows, cols: integer tensors (nnz,); values: float tensor (nnz,); shape: (n_rows, n_cols).
        Duplicate (row, col) pairs are summed by the propagation, as in a COO matrix.
        symmetric: accepted for the backend contract (the torch backend then skips A^T); DGL's
        message passing needs no transposed copy, so it changes nothing here.
        Raises ValueError on mismatched lengths, out-of-range indices or a bad shape.
        """
        dgl = self._dgl
        rows, cols, values = _check_coo(rows, cols, values, shape)
        n_rows, n_cols = int(shape[0]), int(shape[1])
        # int32 node ids halve the index memory and are DGL's faster kernel path; fall back to
        # int64 only for graphs that could not be indexed otherwise.
        idtype = torch.int32 if max(n_rows, n_cols, rows.numel()) <= _INT32_MAX else torch.int64
        src, dst = cols.to(idtype), rows.to(idtype)
        if n_rows == n_cols:
            graph = dgl.graph((src, dst), num_nodes=n_rows, idtype=idtype)
            bipartite = False
        else:
            graph = dgl.heterograph(
                {("col", "to", "row"): (src, dst)},
                num_nodes_dict={"col": n_cols, "row": n_rows},
                idtype=idtype,
            )
            bipartite = True
        graph = graph.to(device)
        weights = values.to(device=device, dtype=torch.float32).contiguous()
        return DGLGraphHandle(graph=graph, weights=weights, shape=(n_rows, n_cols), bipartite=bipartite)

    def spmm(self, handle: DGLGraphHandle, x: torch.Tensor) -> torch.Tensor:
        """``A @ x`` for ``x`` of shape (n_cols, d) (or (n_cols,)); differentiable w.r.t. x.

        Rows of A with no non-zero give zero rows. The edge weights are cast to x's dtype.
        """
        if not isinstance(handle, DGLGraphHandle):
            raise TypeError(f"DGLBackend.spmm needs a handle from DGLBackend.build, got {type(handle).__name__}")
        n_rows, n_cols = handle.shape
        if x.dim() not in (1, 2) or x.shape[0] != n_cols:
            raise ValueError(f"spmm: x must have shape ({n_cols}, d) for A of shape {handle.shape}, got {tuple(x.shape)}")
        squeeze = x.dim() == 1
        feat = x.unsqueeze(1) if squeeze else x
        weights = handle.weights if handle.weights.dtype == feat.dtype else handle.weights.to(feat.dtype)
        if self.mode == "gspmm":
            out = self._dgl.ops.u_mul_e_sum(handle.graph, feat, weights)
        else:
            fn = self._dgl.function
            g = handle.graph
            with g.local_scope():
                g.srcdata["h"] = feat
                g.edata["w"] = weights
                g.update_all(fn.u_mul_e("h", "w", "m"), fn.sum("m", "out"))
                out = g.dstdata["out"]
        return out.squeeze(1) if squeeze else out


def _check_coo(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape) -> tuple[torch.Tensor, ...]:
    if len(shape) != 2 or int(shape[0]) < 0 or int(shape[1]) < 0:
        raise ValueError(f"build: shape must be (n_rows, n_cols) >= 0, got {shape}")
    rows, cols, values = torch.as_tensor(rows), torch.as_tensor(cols), torch.as_tensor(values)
    if rows.dim() != 1 or cols.dim() != 1 or values.dim() != 1:
        raise ValueError("build: rows, cols and values must be 1-D tensors")
    if not (rows.numel() == cols.numel() == values.numel()):
        raise ValueError(f"build: rows ({rows.numel()}), cols ({cols.numel()}) and values ({values.numel()}) differ in length")
    if rows.dtype.is_floating_point or cols.dtype.is_floating_point:
        raise ValueError("build: rows and cols must be integer tensors")
    if rows.numel():
        if int(rows.min()) < 0 or int(rows.max()) >= int(shape[0]):
            raise ValueError(f"build: a row index is outside [0, {int(shape[0])})")
        if int(cols.min()) < 0 or int(cols.max()) >= int(shape[1]):
            raise ValueError(f"build: a column index is outside [0, {int(shape[1])})")
    return rows.long(), cols.long(), values
