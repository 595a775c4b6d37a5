"""Sinkhorn over user row blocks held by Ray actors.

Each actor holds one :class:`~blast_ray.augment.sinkhorn.RowBlock` (its rows of D and D^T and its
row marginal) and its own row log scalings f. Per iteration the driver broadcasts g (one
``ray.put``), each actor runs :func:`~blast_ray.augment.sinkhorn.row_step` and returns its row
error and its partial column product (N floats); the driver combines them and updates g. Only the
dual vectors move. ``num_blocks=1`` runs in-process through the same code (no Ray).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from blast_ray.augment.sinkhorn import (
    KernelCoefficients,
    SinkhornResult,
    _check_marginals,
    _solve_blocks_local,
    _warn_if_unconverged,
    check_inputs,
    combine_columns,
    default_marginals,
    make_blocks,
    row_step,
    sinkhorn_iterate,
)


class _BlockWorker:
    def __init__(self, block, coef):
        self.block = block
        self.coef = coef
        self.f = np.zeros(block.stop - block.start)

    def step(self, have_f: bool, g: np.ndarray):
        f, err, fmax, col = row_step(self.block, self.f if have_f else None, g, self.coef)
        self.f = f
        return err, fmax, col

    def get_f(self):
        return self.f


def distributed_sinkhorn(
    R: sp.spmatrix,
    G: sp.spmatrix,
    eps: float = 0.1,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    tol: float = 1e-6,
    max_iter: int = 1000,
    num_blocks: int = 2,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    log: bool = False,
    num_cpus_per_block: float = 0.5,
) -> SinkhornResult:
    """Same objective, arguments and result as :func:`sparse_sinkhorn`, with rows on Ray actors.

    ``num_cpus_per_block`` is fractional so that small clusters do not deadlock.
    """
    R, G = check_inputs(R, G)
    M, N = R.shape
    if a is None or b is None:
        a0, b0 = default_marginals(R)
        a = a0 if a is None else a
        b = b0 if b is None else b
    a, b = _check_marginals(a, b, M, N)
    coef = KernelCoefficients.of(eps)
    blocks = make_blocks(R, G, a, coef, num_blocks)
    if len(blocks) == 1:
        return _solve_blocks_local(blocks, b, coef, tol, max_iter, init, log)
    from blast_ray.runtime import ensure_ray

    ray = ensure_ray()
    Worker = ray.remote(num_cpus=num_cpus_per_block)(_BlockWorker)
    actors = [Worker.remote(blk, coef) for blk in blocks]
    try:

        def step_rows(have_f, g):
            g_ref = ray.put(g)
            outs = ray.get([w.step.remote(have_f, g_ref) for w in actors])
            err_abs = float(sum(o[0] for o in outs))
            fmax, col = combine_columns([(o[1], o[2]) for o in outs])
            return err_abs, fmax, col

        g0 = None if init is None else init[1]
        g, n_iter, err, conv, secs, errors = sinkhorn_iterate(
            step_rows, N, np.log(b), float(a.sum()), coef, g0, tol, max_iter, log
        )
        f = np.concatenate(ray.get([w.get_f.remote() for w in actors]))
    finally:
        for w in actors:
            ray.kill(w)
    res = SinkhornResult(f, g, coef.eps, n_iter, err, conv, secs, errors)
    _warn_if_unconverged(res, tol)
    return res
