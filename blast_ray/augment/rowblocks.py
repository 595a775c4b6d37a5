"""The augment stage distributed by user row blocks: each block builds, holds and solves its own rows.

A row block (users ``[start, stop)``) is a :class:`RowBlockWorker` (a Ray actor; in the driver
process when the configuration asks for exactly one block). It

1. reads its users' train interactions from the ETL output (a filtered scan) and the item kNN
   graphs, and builds its rows of G = binarize(R K_union) - R
   (:func:`~blast_ray.augment.false_negatives.false_negative_candidates` on its rows: row u of G
   only depends on row u of R) and its rows of the rescaled kernel (D and D^T);
2. takes part in the blocked Sinkhorn: per iteration the driver sends the column log scalings g
   (N floats) and gets back the block's row error and its column partial (N floats);
3. proposes its exact top-q plan cells (:func:`~blast_ray.augment.topq.top_q_cells` on its rows)
   and writes its rows of G as one part file of ``false_negatives.parquet``.

The driver holds O(M + N) vectors (degrees, marginals, f, g) and the merged top q (the final H):
the global top q under the tie rule (value desc, user asc, item asc) is the top q of the union of
the blocks' top q (every globally selected cell is among its own block's top q), so merging gives
exactly the single-process H.

Block planning (:func:`plan_row_blocks`): a user row holds at most ``cells_u = min(N, deg_u (1 +
k_union))`` cells of R + G (``k_union``: the summed per-modality kNN sizes), each costing about
:data:`BYTES_PER_CELL` bytes over the copies a block keeps or builds; a block also holds the item
kNN and a few N-vectors (:func:`fixed_task_bytes`). ``augment.num_blocks: auto`` packs contiguous
users greedily under ``augment.task_memory_gib``; an integer splits into that many blocks balanced
by cells.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from blast_ray.augment.false_negatives import false_negative_candidates
from blast_ray.augment.sinkhorn import KernelCoefficients, RowBlock, combine_columns, kernel_part, row_step
from blast_ray.augment.topq import top_q_cells

log = logging.getLogger(__name__)

# Bytes per R+G cell over what a block builds or keeps at its peak: R and G CSR (12 B each:
# float64 value + int32 index), the R K product before the -R step (12), D and D^T (24), the
# float/int64 temporaries of top-q on G's cells (~36). Measured peak RSS per cell stays below it.
BYTES_PER_CELL = 96
GIB = 1 << 30


def row_cells(deg_users: np.ndarray, k_union: int, n_items: int) -> np.ndarray:
    """Upper bound of R + G cells per user row: ``min(N, deg_u * (1 + k_union))`` (int64, (M,))."""
    deg = np.asarray(deg_users, dtype=np.int64)
    return np.minimum(int(n_items), deg * (1 + int(k_union)))


def fixed_task_bytes(n_items: int, k_union: int) -> int:
    """What every block holds besides its rows: the item kNN (edges frame + CSR, ~40 B per edge)
    and ~8 float64 N-vectors (g, exp(g), column partials)."""
    return int(n_items) * (40 * int(k_union) + 64)


@dataclass(frozen=True)
class BlockPlan:
    """Contiguous user row ranges and the figures the manifest reports."""

    bounds: tuple[tuple[int, int], ...]
    cells: tuple[int, ...]  # planned (upper bound) R+G cells per block

    @property
    def num_blocks(self) -> int:
        return len(self.bounds)

    def summary(self) -> dict:
        rows = [e - s for s, e in self.bounds]
        return {"num_blocks": self.num_blocks, "rows_per_block_max": int(max(rows, default=0)),
                "rows_per_block_min": int(min(rows, default=0)),
                "planned_peak_cells_per_block": int(max(self.cells, default=0))}


def plan_row_blocks(cells: np.ndarray, num_blocks: int | str, task_memory_gib: float, fixed_bytes: int) -> BlockPlan:
    """Split users ``0..M-1`` into contiguous row blocks.

    Parameters
    ----------
    cells : (M,) R+G cells per user row (:func:`row_cells`).
    num_blocks : ``"auto"``: as few blocks as fit ``task_memory_gib`` each (greedy packing);
        an int: that many blocks (at most M) balanced by cells + rows.
    task_memory_gib : the per-block memory budget (``augment.task_memory_gib``).
    fixed_bytes : bytes every block holds besides its rows (:func:`fixed_task_bytes`).

    ``ValueError`` (one line naming ``augment.task_memory_gib`` and the figure needed) when
    ``auto`` cannot fit even one user row.

    >>> plan_row_blocks(np.array([10, 10, 10, 10]), "auto", 20 * 96 / 2**30, 0).bounds
    ((0, 2), (2, 4))
    """
    cells = np.asarray(cells, dtype=np.int64)
    M = int(cells.size)
    if M == 0:
        return BlockPlan(((0, 0),), (0,))
    cum = np.cumsum(cells)
    if num_blocks == "auto":
        budget = float(task_memory_gib) * GIB
        cap = int((budget - fixed_bytes) // BYTES_PER_CELL)
        biggest = int(cells.max())
        if cap < max(1, biggest):
            need = (fixed_bytes + max(1, biggest) * BYTES_PER_CELL) / GIB
            raise ValueError(
                f"augment.task_memory_gib={task_memory_gib:g} is too small for one row block: the item kNN and "
                f"vectors ({fixed_bytes / GIB:.4g} GiB) plus the largest user row ({biggest} cells) need "
                f"{need:.4g} GiB; raise augment.task_memory_gib to at least {need:.4g}")
        bounds, s = [], 0
        while s < M:
            base = int(cum[s - 1]) if s else 0
            e = int(np.searchsorted(cum, base + cap, side="right"))
            e = max(e, s + 1)
            bounds.append((s, e))
            s = e
    else:
        n = max(1, min(int(num_blocks), M))
        work = cum.astype(np.float64) + np.arange(1, M + 1)  # cells + rows, as make_blocks
        cuts = [0] + [int(np.searchsorted(work, work[-1] * k / n)) + 1 for k in range(1, n)] + [M]
        for k in range(1, n):  # exactly n non-empty blocks: each cut at least one row past the last
            cuts[k] = min(max(cuts[k], cuts[k - 1] + 1), M - (n - k))
        bounds = list(zip(cuts[:-1], cuts[1:]))
    block_cells = tuple(int(cum[e - 1] - (cum[s - 1] if s else 0)) for s, e in bounds)
    return BlockPlan(tuple((int(s), int(e)) for s, e in bounds), block_cells)


def item_knn_union(frames, k: int, n_items: int) -> list[sp.csr_matrix]:
    """Per-modality binary item kNN (N x N CSR), each cut to the top ``k`` by sim per item
    (``augment.knn_k``; ties keep the stored order). ``frames``: edge frames (src, dst, sim)."""
    mats = []
    for t in frames:
        t = t.sort_values(["src", "sim"], ascending=[True, False], kind="stable")
        t = t[t.groupby("src").cumcount() < k]
        m = sp.csr_matrix((np.ones(len(t)), (t["src"].to_numpy(), t["dst"].to_numpy())), shape=(n_items, n_items))
        m.data[:] = 1.0
        mats.append(m)
    return mats


class RowBlockWorker:
    """One user row block: builds its rows of R, G and the kernel, steps Sinkhorn, proposes top q.

    The constructor stores sizes only; :meth:`build` does the reading.
    """

    def __init__(self, index: int, start: int, stop: int, n_items: int, eps: float):
        self.index, self.start, self.stop, self.n_items = index, start, stop, n_items
        self.coef = KernelCoefficients.of(eps)
        self.block: RowBlock | None = None
        self.R: sp.csr_matrix | None = None  # (rows, N) train rows, local row indices
        self.G: sp.csr_matrix | None = None  # (rows, N) false-negative candidates
        self.f: np.ndarray | None = None  # (rows,) log row scalings

    def build(self, store, etl_parts, knn_parts: list[tuple[str, ...]], knn_k: int, a_rows) -> dict:
        """Read the block's train rows and the item kNN; build R, G and D rows. ``a_rows``: this
        block's row marginals (rows,) (or one number for all of them). Returns counts."""
        from blast_ray.etl.artifacts import train_rows

        rows = self.stop - self.start
        u, i = train_rows(store, tuple(etl_parts), self.start, self.stop)
        R = sp.csr_matrix((np.ones(u.size), (u - self.start, i)), shape=(rows, self.n_items))
        R.sum_duplicates()
        R.data[:] = 1.0
        frames = [store.read_table(*p).to_pandas() for p in knn_parts]
        G = false_negative_candidates(R, item_knn_union(frames, knn_k, self.n_items))
        del frames
        D = kernel_part(R, G, self.coef)
        a = np.broadcast_to(np.asarray(a_rows, dtype=np.float64), (rows,)).copy()
        self.block = RowBlock(self.start, self.stop, D, sp.csr_matrix(D.T), np.log(a), a)
        self.R, self.G = R, G
        self.f = np.zeros(rows)
        return {"rows": rows, "train": int(R.nnz), "false_negatives": int(G.nnz), "cells": int(R.nnz + G.nnz)}

    def step(self, have_f: bool, g: np.ndarray):
        f, err, fmax, col = row_step(self.block, self.f if have_f else None, g, self.coef)
        self.f = f
        return err, fmax, col

    def f_values(self) -> np.ndarray:
        return self.f

    def top_q(self, g: np.ndarray, q: int):
        """The block's exact top q cells with R = 0: (global users, items, log values, in G)."""
        u, i, v = top_q_cells(self.f, g, self.coef.eps, self.R, self.G, q)
        in_g = np.asarray(self.G[u, i]).ravel() != 0 if u.size else np.zeros(0, dtype=bool)
        return u + self.start, i, v, in_g

    def write_false_negatives(self, store, parts) -> int:
        """Write this block's rows of G (global user_idx, row-major) as part ``index`` under ``parts``."""
        from blast_ray.augment.artifacts import write_false_negatives_part

        gr, gc = self.G.nonzero()
        order = np.lexsort((gc, gr))
        write_false_negatives_part(store, parts, self.index, gr[order] + self.start, gc[order])
        return int(self.G.nnz)


def merge_top_q(parts, q: int):
    """Merge per-block candidates ``(users, items, log_values, in_g)`` into the global top q
    (value desc, user asc, item asc); keeps at most q + one block's q in memory at a time."""
    U = I = V = None
    Gf = None
    for u, i, v, g in parts:
        if U is None:
            U, I, V, Gf = u, i, v, g
        else:
            U, I, V, Gf = (np.concatenate([U, u]), np.concatenate([I, i]), np.concatenate([V, v]),
                           np.concatenate([Gf, g]))
        order = np.lexsort((I, U, -V))[:q]
        U, I, V, Gf = U[order], I[order], V[order], Gf[order]
    if U is None:
        e = np.zeros(0, dtype=np.int64)
        return e, e, np.zeros(0), np.zeros(0, dtype=bool)
    return U.astype(np.int64), I.astype(np.int64), V, Gf
