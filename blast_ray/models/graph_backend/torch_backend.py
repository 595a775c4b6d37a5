"""torch.sparse CSR backend: ``A @ x`` with ``torch.sparse.mm`` (differentiable w.r.t. x)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
import warnings

import numpy as np
import scipy.sparse as sp
import torch

_INT32_MAX = 2**31 - 1


@dataclass
class TorchGraphHandle:
    """A built sparse matrix: ``matrix`` is a torch sparse CSR tensor of ``shape``."""

    matrix: torch.Tensor
    shape: tuple[int, int]
    transposed: torch.Tensor | None = None  # A^T as CSR: the backward product (torch's own is ~20x slower)

    @property
    def nnz(self) -> int:
        return int(self.matrix.values().shape[0])


class TorchBackend:
    """Sparse-dense products through torch.sparse CSR (the default backend)."""

    name = "torch"

    def __repr__(self) -> str:
        return "TorchBackend()"

    def build(
        self,
        rows: torch.Tensor,
        cols: torch.Tensor,
        values: torch.Tensor,
        shape: tuple[int, int],
        device: Any = "cpu",
        symmetric: bool = False,
    ) -> TorchGraphHandle:
        """CSR of ``A[rows[e], cols[e]] = values[e]`` (duplicates summed). Clear ValueError on bad input.

        symmetric: the caller guarantees A == A^T (the normalized user-item adjacency): the backward
        product then reuses the CSR of A instead of holding a transposed copy (half the memory and
        half the build). The CSR is built by scipy's counting sort (O(nnz + n), no global sort) with
        int32 indices when nnz and the shape fit (half the index memory; MKL's native index width),
        else int64."""
        rows, cols, values = torch.as_tensor(rows), torch.as_tensor(cols), torch.as_tensor(values)
        if len(shape) != 2:
            raise ValueError(f"build: shape must be (n_rows, n_cols), got {shape}")
        if not (rows.dim() == cols.dim() == values.dim() == 1) or not (rows.numel() == cols.numel() == values.numel()):
            raise ValueError("build: rows, cols and values must be 1-D tensors of the same length")
        n_rows, n_cols = int(shape[0]), int(shape[1])
        if rows.numel():
            if int(rows.min()) < 0 or int(rows.max()) >= n_rows:
                raise ValueError(f"build: a row index is outside [0, {n_rows})")
            if int(cols.min()) < 0 or int(cols.max()) >= n_cols:
                raise ValueError(f"build: a column index is outside [0, {n_cols})")
        coo = sp.coo_matrix((values.detach().cpu().numpy().astype(np.float32, copy=False),
                             (rows.cpu().numpy(), cols.cpu().numpy())), shape=(n_rows, n_cols))
        csr = _torch_csr(coo.tocsr(), device)  # tocsr sums duplicates and sorts the columns of each row
        csr_t = csr if symmetric else _torch_csr(coo.T.tocsr(), device)
        return TorchGraphHandle(matrix=csr, shape=(n_rows, n_cols), transposed=csr_t)

    def spmm(self, handle: TorchGraphHandle, x: torch.Tensor) -> torch.Tensor:
        """``A @ x`` for x of shape (n_cols, d) or (n_cols,)."""
        if not isinstance(handle, TorchGraphHandle):
            raise TypeError(f"TorchBackend.spmm needs a handle from TorchBackend.build, got {type(handle).__name__}")
        if x.dim() not in (1, 2) or x.shape[0] != handle.shape[1]:
            raise ValueError(f"spmm: x must have shape ({handle.shape[1]}, d) for A of shape {handle.shape}, got {tuple(x.shape)}")
        squeeze = x.dim() == 1
        out = _CSRMatmul.apply(handle.matrix, handle.transposed, x.unsqueeze(1) if squeeze else x)
        return out.squeeze(1) if squeeze else out


class _CSRMatmul(torch.autograd.Function):
    """y = A @ x with dy/dx computed as A^T @ grad on a prebuilt CSR of A^T (no grad for A)."""

    @staticmethod
    def forward(ctx, a, a_t, x):
        ctx.a_t = a_t
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx, grad):
        return None, None, torch.sparse.mm(ctx.a_t, grad.contiguous())


def _torch_csr(m: sp.csr_matrix, device: Any) -> torch.Tensor:
    """A scipy CSR (canonical: sorted, no duplicates) as a torch sparse CSR tensor on ``device``;
    int32 indices when they fit, the arrays shared with scipy's where the dtype already matches."""
    m.sum_duplicates()
    idx = np.int32 if max(m.nnz, *m.shape) <= _INT32_MAX else np.int64
    crow = torch.from_numpy(np.asarray(m.indptr, dtype=idx))
    col = torch.from_numpy(np.asarray(m.indices, dtype=idx))
    val = torch.from_numpy(np.asarray(m.data, dtype=np.float32))
    with warnings.catch_warnings():  # "sparse CSR is beta": informational, once per build
        warnings.simplefilter("ignore", UserWarning)
        t = torch.sparse_csr_tensor(crow, col, val, m.shape, check_invariants=False)
        return t.to(device)
