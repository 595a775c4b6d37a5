"""Detect a feature whose rows are (near-)identical: a kNN over it is decided by the tie rule.

Example: Amazon Baby / Sports have no item text in the shared data, so the template profiles are
one sentence for every item; every item vector is then the same, every cosine is 1, and the top-k
of every item is items 0..k-1 (lower index wins ties). Such a feature carries no information; the
graphs stage falls back (items: co-occurrence; users: no user graph) instead of building that graph.

Pure and streaming-friendly: three passes over row blocks (the mean direction of the normalized
rows; the row closest to it, the *reference*; how many rows point the reference's way), O(N d)
time, O(block d) memory; never N x N. The reference is a real row, so a feature where most rows
are one sentence and a few differ is caught too (the mean alone would sit between them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: a row counts as identical to the reference row when their cosine is >= 1 - COS_TOL (identical
#: sentences encoded in different batches differ by ~1e-7; distinct sentences are far below)
COS_TOL = 1e-4
#: a feature is degenerate when at least this share of its non-zero rows is identical to the reference
#: (their neighbours are then decided by the tie rule)
DEGENERATE_SHARE = 0.9


@dataclass(frozen=True)
class RowSpread:
    """How alike the rows of a feature matrix are.

    n_rows: rows considered; n_zero: all-zero rows among them (not counted below);
    reference: index (into ``x``) of the non-zero row closest to the mean direction (-1: none);
    n_identical: non-zero rows whose cosine to the reference is >= 1 - cos_tol (the reference included);
    min_cos: the smallest cosine of a non-zero row to the reference (nan with no non-zero row).
    """

    n_rows: int
    n_zero: int
    reference: int
    n_identical: int
    min_cos: float
    cos_tol: float

    @property
    def share_identical(self) -> float:
        """Share of the non-zero rows identical to the reference (0.0 with no non-zero row)."""
        nz = self.n_rows - self.n_zero
        return self.n_identical / nz if nz else 0.0

    def degenerate(self, min_share: float = DEGENERATE_SHARE) -> bool:
        """True when the feature cannot rank neighbours: >= ``min_share`` of its non-zero rows (and
        at least 2) are the same direction, or fewer than 2 rows are non-zero."""
        nz = self.n_rows - self.n_zero
        return nz < 2 or (self.n_identical >= 2 and self.share_identical >= min_share)

    def describe(self) -> str:
        """One line for logs and manifests."""
        nz = self.n_rows - self.n_zero
        if nz < 2:
            return f"only {nz} of {self.n_rows} rows non-zero"
        if self.n_identical == nz:
            what = f"all {nz} non-zero rows identical" if self.n_zero else f"all {nz} rows identical"
        else:
            what = f"{self.n_identical} of {nz} non-zero rows identical"
        return f"{what} (cosine >= 1 - {self.cos_tol:g} to row {self.reference})"


def row_spread(x: np.ndarray, rows: np.ndarray | None = None, cos_tol: float = COS_TOL,
               block_rows: int = 65536) -> RowSpread:
    """How many rows of ``x`` (N, d) point the same way as its most central row, summarized.

    ``rows``: indices of the rows to consider (None: all). All-zero rows are counted apart (they
    have no direction). Blocks of ``block_rows`` rows are processed in float64; no N x N.

    >>> row_spread(np.ones((5, 3))).degenerate()
    True
    >>> row_spread(np.eye(3)).degenerate()
    False
    >>> s = row_spread(np.vstack([np.ones((95, 3)), np.eye(3)]))
    >>> (s.n_identical, s.degenerate())
    (95, True)
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D feature matrix (rows x dim), got shape {x.shape}")
    idx = np.arange(x.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)

    def blocks():
        for s in range(0, len(idx), block_rows):
            ids = idx[s: s + block_rows]
            b = np.asarray(x[ids], dtype=np.float64)
            norms = np.linalg.norm(b, axis=1)
            nz = norms > 0
            yield ids[nz], b[nz] / norms[nz, None], int((~nz).sum())

    mean = np.zeros(x.shape[1], dtype=np.float64)
    n_zero = 0
    for _, unit, zeros in blocks():
        n_zero += zeros
        mean += unit.sum(axis=0)
    if n_zero == len(idx):
        return RowSpread(len(idx), n_zero, -1, 0, float("nan"), cos_tol)
    # the reference: the real row closest to the mean direction (any row when the mean is zero)
    best, ref, ref_vec = -np.inf, -1, None
    for ids, unit, _ in blocks():
        cos = unit @ mean
        j = int(np.argmax(cos))
        if cos[j] > best:
            best, ref, ref_vec = float(cos[j]), int(ids[j]), unit[j].copy()
    n_same, min_cos = 0, 1.0
    for _, unit, _ in blocks():
        cos = unit @ ref_vec
        n_same += int((cos >= 1.0 - cos_tol).sum())
        min_cos = min(min_cos, float(cos.min()))
    return RowSpread(len(idx), n_zero, ref, n_same, min_cos, cos_tol)
