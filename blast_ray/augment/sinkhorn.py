"""Exact entropic OT for the three-valued BLAST cost, in O(nnz(R) + nnz(G)) per iteration.

Objective (method doc section 4)::

    min_P  <C, P> - eps * H(P)   s.t.  P 1 = a,  P^T 1 = b,
    C_ui = +1 if R_ui = 1,  -1 if (u, i) in G,  0 otherwise   (R, G disjoint, binary, M x N)

The Gibbs kernel takes three values, so it is ``e0 11^T + (e_fn - e0) G + (e_obs - e0) R``.
We divide it by ``e_fn = exp(1/eps)`` (a constant factor does not change the plan), which gives
the entries ``c_other = exp(-1/eps)`` (cells in neither), ``1`` (cells in G) and
``c_obs = exp(-2/eps)`` (cells in R): all representable in float64 down to eps ~ 0.0014.
The scalings are kept as LOG scalings f, g (``P = diag(e^f) K' diag(e^g)``) and every product is
computed on ``exp(g - max g)`` (max-shift), so x, y never overflow or underflow even at eps=0.01.

Per product (e.g. ``K' y`` with ``y~ = exp(g - gmax)``)::

    K' y~ = c_other * sum(y~) + D y~,   D = (1 - c_other) G + (c_obs - c_other) R   (one sparse matrix)

so one Sinkhorn iteration is one CSR mat-vec with D and one with D^T (precomputed as CSR) plus
O(M + N) exp/log work. Accumulation is float64 throughout.

Iteration order (one iteration = two half steps, the same as POT's ``sinkhorn_knopp`` with u/v
swapped)::

    f <- log a - log K' e^g        (rows exact after this step)
    g <- log b - log K'^T e^f      (columns exact after this step)

Stopping rule: the relative ROW marginal error ``||P 1 - a||_1 / ||a||_1`` measured with the
current (f, g) at the start of an iteration, before the f update (it reuses that iteration's
``K' y``, so it costs nothing). It stops when the error is ``< tol`` or after ``max_iter``
iterations, then warns with :class:`SinkhornNotConverged`.

Numerical caveat (documented, not hidden): the "other" part of a row, ``c_other * (sum(y~) -
(R y~)_u - (G y~)_u)``, is formed as ``c_other * sum(y~) + ((c_obs - c_other) R y~)_u``; when a
user's observed items carry nearly all of the mass of ``y`` the subtraction loses relative
precision (absolute error ~1e-16 * c_other * sum(y~)). That only matters when that error exceeds
``c_obs * (R y~)_u``, i.e. for eps < ~0.03 together with such degenerate scalings; the tests on
real data do not hit it.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from blast_ray.progress import Progress

log = logging.getLogger(__name__)


class SinkhornNotConverged(UserWarning):
    """Sinkhorn stopped at ``max_iter`` with the marginal error still >= ``tol``."""


@dataclass(frozen=True)
class KernelCoefficients:
    """The rescaled kernel's three values (divided by exp(1/eps))."""

    eps: float
    c_other: float  # exp(-1/eps): cells in neither R nor G
    c_fn: float  # 1: cells in G (false-negative candidates)
    c_obs: float  # exp(-2/eps): cells in R (observed)

    @classmethod
    def of(cls, eps: float) -> "KernelCoefficients":
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        c_other = float(np.exp(-1.0 / eps))
        c_obs = float(np.exp(-2.0 / eps))
        if c_other == 0.0:
            raise ValueError(f"eps={eps} is too small: exp(-1/eps) underflows float64 (use eps >= 0.0015)")
        return cls(eps, c_other, 1.0, c_obs)

    @property
    def log_values(self) -> tuple[float, float, float]:
        """log of (other, fn, obs) entries: (-1/eps, 0, -2/eps)."""
        return (-1.0 / self.eps, 0.0, -2.0 / self.eps)


@dataclass
class RowBlock:
    """A block of user rows: the sparse part D of the rescaled kernel and its transpose.

    ``D = (1 - c_other) G + (c_obs - c_other) R`` restricted to rows [start, stop).
    """

    start: int
    stop: int
    D: sp.csr_matrix  # (rows, N)
    DT: sp.csr_matrix  # (N, rows), CSR of the transpose: row-wise mat-vec is faster than CSC
    log_a: np.ndarray  # (rows,)
    a: np.ndarray  # (rows,)


def check_inputs(R: sp.spmatrix, G: sp.spmatrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Validate shapes and disjointness; return binary float64 CSR copies."""
    if R.shape != G.shape:
        raise ValueError(f"R and G must have the same shape, got {R.shape} and {G.shape}")
    R = sp.csr_matrix(R, dtype=np.float64, copy=True)
    G = sp.csr_matrix(G, dtype=np.float64, copy=True)
    for m in (R, G):
        m.sum_duplicates()
        m.eliminate_zeros()
        m.data[:] = 1.0
    overlap = R.multiply(G).nnz
    if overlap:
        raise ValueError(f"R and G must be disjoint (G excludes train items); {overlap} cells are in both")
    return R, G


def kernel_part(R: sp.csr_matrix, G: sp.csr_matrix, coef: KernelCoefficients) -> sp.csr_matrix:
    """D = (1 - c_other) G + (c_obs - c_other) R as one float64 CSR matrix (R, G disjoint)."""
    D = (1.0 - coef.c_other) * G + (coef.c_obs - coef.c_other) * R
    D = sp.csr_matrix(D, dtype=np.float64)
    D.sort_indices()
    return D


def make_blocks(
    R: sp.csr_matrix, G: sp.csr_matrix, a: np.ndarray, coef: KernelCoefficients, num_blocks: int
) -> list[RowBlock]:
    """Split users into ``num_blocks`` contiguous row blocks balanced by nnz(R) + nnz(G)."""
    D = kernel_part(R, G, coef)
    M = D.shape[0]
    num_blocks = max(1, min(int(num_blocks), M))
    cum = D.indptr[1:].astype(np.float64) + np.arange(1, M + 1)  # work ~ nnz + rows
    bounds = [0]
    for k in range(1, num_blocks):
        bounds.append(int(np.searchsorted(cum, cum[-1] * k / num_blocks)) + 1)
    bounds.append(M)
    bounds = sorted(set(min(max(b, 0), M) for b in bounds))
    blocks = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        Db = D[s:e]
        blocks.append(RowBlock(s, e, Db, sp.csr_matrix(Db.T), np.log(a[s:e]), np.asarray(a[s:e], dtype=np.float64)))
    return blocks


def row_step(block: RowBlock, log_f_old: np.ndarray | None, g: np.ndarray, coef: KernelCoefficients):
    """One row half step on a block, and its contribution to the column product.

    Returns ``(f_new, row_err_abs, fmax, col_partial)`` where ``row_err_abs = sum_u |P1 - a|``
    for the OLD f (0 when ``log_f_old`` is None), and ``col_partial = K'_block^T exp(f_new - fmax)``
    restricted to this block (the driver rescales partials by ``exp(fmax_k - fmax)`` and sums).
    """
    gmax = float(g.max())
    y = np.exp(g - gmax)
    Ky = coef.c_other * y.sum() + block.D @ y  # (rows,), scaled by exp(-gmax)
    log_Ky = np.log(Ky) + gmax
    if log_f_old is None:
        err = 0.0
    else:
        err = float(np.abs(np.exp(log_f_old + log_Ky) - block.a).sum())
    f = block.log_a - log_Ky
    fmax = float(f.max())
    x = np.exp(f - fmax)
    col = coef.c_other * x.sum() + block.DT @ x  # (N,)
    return f, err, fmax, col


def combine_columns(parts: list[tuple[float, np.ndarray]]) -> tuple[float, np.ndarray]:
    """Sum block partials ``(fmax_k, col_k)`` into ``(fmax, col)`` with col scaled by exp(-fmax)."""
    fmax = max(p[0] for p in parts)
    col = np.zeros_like(parts[0][1])
    for fk, ck in parts:
        col += np.exp(fk - fmax) * ck
    return fmax, col


@dataclass
class SinkhornResult:
    """Log scalings of the plan ``P_ui = exp(f_u + g_i + log K'_ui)`` and diagnostics."""

    f: np.ndarray  # (M,) log row scalings
    g: np.ndarray  # (N,) log column scalings
    eps: float
    n_iter: int
    error: float  # final relative row marginal error
    converged: bool
    seconds: float
    errors: list[float] = field(default_factory=list)  # history (filled when log=True)

    @property
    def seconds_per_iter(self) -> float:
        return self.seconds / max(1, self.n_iter)

    def plan_values(self, rows: np.ndarray, cols: np.ndarray, R: sp.csr_matrix, G: sp.csr_matrix) -> np.ndarray:
        """P at the given cells (computed as exp(f_u + g_i + log K'_ui))."""
        return np.exp(self.log_plan_values(rows, cols, R, G))

    def log_plan_values(self, rows, cols, R, G) -> np.ndarray:
        coef = KernelCoefficients.of(self.eps)
        lo, lfn, lobs = coef.log_values
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        in_r = np.asarray(R[rows, cols]).ravel() != 0
        in_g = np.asarray(G[rows, cols]).ravel() != 0
        lk = np.where(in_r, lobs, np.where(in_g, lfn, lo))
        return (self.f[rows] + self.g[cols]) + lk

    def dense_plan(self, R: sp.spmatrix, G: sp.spmatrix) -> np.ndarray:
        """The full M x N plan: for tests and small problems only (O(MN) memory)."""
        coef = KernelCoefficients.of(self.eps)
        lo, lfn, lobs = coef.log_values
        lk = np.full(R.shape, lo)
        lk[np.asarray(G.toarray()) != 0] = lfn
        lk[np.asarray(R.toarray()) != 0] = lobs
        return np.exp((self.f[:, None] + self.g[None, :]) + lk)

    def diagnostics(self) -> dict:
        return {
            "iterations": int(self.n_iter),
            "final_error": float(self.error),
            "converged": bool(self.converged),
            "seconds": round(self.seconds, 4),
            "seconds_per_iter": float(self.seconds_per_iter),
            "eps": float(self.eps),
        }


ROW_TARGETS = ("mean_activity", "uniform")
COL_TARGETS = ("mean_popularity", "uniform")


def _target_value(target: str | float, mean_name: str, mean_value: float, key: str, own_name: str) -> float:
    if isinstance(target, str):
        if target == mean_name:
            return mean_value
        if target == "uniform":
            return 1.0
        raise ValueError(f"{key} must be {mean_name}, {own_name}, uniform or a positive number, got {target!r}")
    value = float("nan") if isinstance(target, bool) else float(target)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{key} must be {mean_name}, {own_name}, uniform or a positive number, got {target!r}")
    return value


def marginals(
    R: sp.spmatrix, row_target: str | float = "mean_activity", col_target: str | float = "mean_popularity"
) -> tuple[np.ndarray, np.ndarray]:
    """The OT marginals a (users) and b (items) of the plan P: ``P 1 = a``, ``P^T 1 = b``.

    Parameters
    ----------
    R : (M, N) sparse train interactions; |D| = nnz(R) (> 0).
    row_target : ``"mean_activity"`` (default): a_u = |D| / M, the mean train activity;
        ``"activity"``: a_u = max(1, deg_u), each user's own train activity (active users receive
        more augmented mass); ``"uniform"``: a_u = 1; a positive number c: a_u = c.
    col_target : ``"mean_popularity"`` (default): b_i = |D| / N, the mean train popularity;
        ``"popularity"``: b_i = max(1, pop_i), each item's own train popularity; ``"uniform"``:
        b_i = 1; a positive number c: b_i = c.

    Total-mass rule: balanced OT needs sum(a) == sum(b). ``a`` is kept as chosen and ``b`` is
    rescaled to a's mass, ``b <- b * sum(a) / sum(b)``. With the defaults both already total |D|,
    so nothing is rescaled.

    Consequence (exact, tested): the constant targets (means, uniform, numbers) differ only by a
    scale, so among them a choice only multiplies the plan by ``s = sum(a) / |D|`` (the Sinkhorn
    scalings shift by log s): H and its order are the same, only its ``plan_value`` scales by s.
    Only the per-user / per-item targets (``activity``, ``popularity``) change which pairs H holds:
    that is the knob of the paper's Fig. 3c sweep.

    Returns
    -------
    (a, b): float64 arrays of shapes (M,) and (N,), strictly positive, ``sum(a) == sum(b)``.

    >>> import scipy.sparse as sp
    >>> a, b = marginals(sp.csr_matrix([[1, 0, 1], [0, 1, 0]]), "uniform", "mean_popularity")
    >>> a.tolist(), b.tolist()
    ([1.0, 1.0], [0.6666666666666666, 0.6666666666666666, 0.6666666666666666])
    >>> a, b = marginals(sp.csr_matrix([[1, 0, 1], [0, 1, 0]]), "activity", "popularity")
    >>> a.tolist(), b.tolist()
    ([2.0, 1.0], [1.0, 1.0, 1.0])
    """
    M, N = R.shape
    R = sp.csr_matrix(R)
    return marginals_of(int(R.nnz), M, N, row_target, col_target,
                        deg_users=np.diff(R.indptr), deg_items=np.bincount(R.indices, minlength=N))


def marginals_of(
    nnz: int, M: int, N: int, row_target: str | float = "mean_activity", col_target: str | float = "mean_popularity",
    deg_users: np.ndarray | None = None, deg_items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`marginals` from the sizes and the train degree vectors (|D| = ``nnz``, M users, N
    items; ``deg_users`` (M,) / ``deg_items`` (N,) are needed only by the ``activity`` /
    ``popularity`` targets): what the augment stage's driver uses, so it never holds R."""
    nnz = float(nnz)
    if nnz == 0:
        raise ValueError("R has no interactions: the OT marginals nnz(R)/M, nnz(R)/N would be zero")
    a = _own_or_constant(row_target, "activity", deg_users, M, "mean_activity", nnz / M, "augment.row_target")
    b = _own_or_constant(col_target, "popularity", deg_items, N, "mean_popularity", nnz / N, "augment.col_target")
    b *= a.sum() / b.sum()
    return a, b


def _own_or_constant(target, own_name: str, degrees, size: int, mean_name: str, mean_value: float, key: str) -> np.ndarray:
    if isinstance(target, str) and target == own_name:
        if degrees is None or len(degrees) != size:
            raise ValueError(f"{key}={own_name} needs the train degree vector of length {size}")
        # floor 1: a user/item without a train interaction still gets a (small) positive mass
        return np.maximum(np.asarray(degrees, dtype=np.float64), 1.0)
    return np.full(size, _target_value(target, mean_name, mean_value, key, own_name))


def default_marginals(R: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """a_u = nnz(R)/M (mean train activity), b_i = nnz(R)/N (mean train popularity)."""
    return marginals(R)


def _check_marginals(a, b, M, N):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != (M,) or b.shape != (N,):
        raise ValueError(f"marginals must have shapes ({M},) and ({N},), got {a.shape} and {b.shape}")
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("marginals must be strictly positive")
    if not np.isclose(a.sum(), b.sum(), rtol=1e-9):
        raise ValueError(f"marginals must have equal mass, got sum(a)={a.sum()} and sum(b)={b.sum()}")
    return a, b


def sinkhorn_iterate(step_rows, N: int, log_b: np.ndarray, a_mass: float, coef, g0, tol, max_iter, log, on_iter=None):
    """The driver loop shared by the single-process and Ray paths.

    ``step_rows(f_known, g) -> (err_abs, fmax, col)`` runs the row half step over all blocks
    (they keep their own f) and returns the summed row error and combined column product.
    """
    g = np.zeros(N) if g0 is None else np.asarray(g0, dtype=np.float64).copy()
    errors: list[float] = []
    err = np.inf
    converged = False
    t0 = time.perf_counter()
    n_iter = 0
    first = True
    progress = Progress("augment: Sinkhorn", int(max_iter), "iterations")  # a bar, or a line every 30 s
    while True:
        err_abs, fmax, col = step_rows(not first, g)
        if not first:
            err = err_abs / a_mass
            if log:
                errors.append(err)
            if not np.isfinite(err):
                raise FloatingPointError(f"Sinkhorn diverged: marginal error is {err} at iteration {n_iter}")
            if err < tol:
                converged = True
                break
            if n_iter >= max_iter:
                break
        first = False
        # column half step (rows were updated inside step_rows)
        g = log_b - (np.log(col) + fmax)
        n_iter += 1
        progress.update(1)
        if on_iter is not None:
            on_iter(n_iter, err)
    progress.close()
    return g, n_iter, float(err), converged, time.perf_counter() - t0, errors


def sparse_sinkhorn(
    R: sp.spmatrix,
    G: sp.spmatrix,
    eps: float = 0.1,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    tol: float = 1e-6,
    max_iter: int = 1000,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    log: bool = False,
) -> SinkhornResult:
    """Entropic OT plan for the BLAST cost (+1 on R, -1 on G, 0 elsewhere), never forming M x N.

    Parameters
    ----------
    R : (M, N) sparse, binary train interactions.
    G : (M, N) sparse, binary false-negative candidates, disjoint from R.
    eps : entropic regularisation (> 0; safe down to 0.01).
    a, b : (M,), (N,) positive marginals with equal mass; default nnz(R)/M and nnz(R)/N.
    tol : stop when ||P 1 - a||_1 / ||a||_1 < tol.
    max_iter : iteration bound; reaching it warns with :class:`SinkhornNotConverged`.
    init : warm start ``(f, g)`` log scalings (e.g. a previous result's ``.f, .g``); only g is used
        by the first half step.
    log : keep the per-iteration error history in ``result.errors``.

    Returns
    -------
    SinkhornResult with log scalings ``f`` (M,), ``g`` (N,): ``P_ui = exp(f_u + g_i + log K'_ui)``.

    Example
    -------
    >>> import numpy as np, scipy.sparse as sp
    >>> R = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]]))
    >>> G = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 1]]))
    >>> res = sparse_sinkhorn(R, G, eps=0.5, tol=1e-10)
    >>> P = res.dense_plan(R, G)
    >>> bool(np.allclose(P.sum(1), 1.0) and np.allclose(P.sum(0), 2 / 3))
    True
    """
    R, G = check_inputs(R, G)
    M, N = R.shape
    if a is None or b is None:
        a0, b0 = default_marginals(R)
        a = a0 if a is None else a
        b = b0 if b is None else b
    a, b = _check_marginals(a, b, M, N)
    coef = KernelCoefficients.of(eps)
    blocks = make_blocks(R, G, a, coef, 1)
    return _solve_blocks_local(blocks, b, coef, tol, max_iter, init, log)


def _solve_blocks_local(blocks, b, coef, tol, max_iter, init, log) -> SinkhornResult:
    M = blocks[-1].stop
    N = b.shape[0]
    f_all = np.zeros(M)

    def step_rows(have_f, g):
        parts, err_abs = [], 0.0
        for blk in blocks:
            f, e, fmax, col = row_step(blk, f_all[blk.start : blk.stop] if have_f else None, g, coef)
            f_all[blk.start : blk.stop] = f
            err_abs += e
            parts.append((fmax, col))
        fmax, col = combine_columns(parts)
        return err_abs, fmax, col

    g0 = None if init is None else init[1]
    g, n_iter, err, conv, secs, errors = sinkhorn_iterate(
        step_rows, N, np.log(b), float(sum(blk.a.sum() for blk in blocks)), coef, g0, tol, max_iter, log
    )
    res = SinkhornResult(f_all.copy(), g, coef.eps, n_iter, err, conv, secs, errors)
    _warn_if_unconverged(res, tol)
    return res


def _warn_if_unconverged(res: SinkhornResult, tol: float) -> None:
    if not res.converged:
        warnings.warn(
            f"Sinkhorn stopped after {res.n_iter} iterations with relative marginal error "
            f"{res.error:.3e} >= tol {tol:.1e} (eps={res.eps}); raise augment.max_iter or eps",
            SinkhornNotConverged,
            stacklevel=3,
        )
    else:
        log.debug("Sinkhorn converged in %d iterations (error %.2e, %.4f s/iter)", res.n_iter, res.error, res.seconds_per_iter)
