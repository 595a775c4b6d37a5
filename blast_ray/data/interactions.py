"""The ETL output contract, read back as sparse matrices for the downstream stages.

ETL writes its Parquet tables under its stage output (``blast_ray.etl.artifacts``):

- ``interactions``: user_idx int64, item_idx int64, rating float64 (null if implicit),
  timestamp int64 (null if unknown), split string in {train, valid, test}
- ``users``: user_idx int64, user_id string (+ optional side columns)
- ``items``: item_idx int64, item_id string, title, description, brand, categories (list<string>),
  image_url (strings, null when missing)
- ``reviews``: user_idx, item_idx, text, summary (strings, null when missing)

Ids are dense and 0-based: ``user_idx in [0, n_users)``, ``item_idx in [0, n_items)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

SPLITS = ("train", "valid", "test")


@dataclass
class InteractionData:
    """Interactions of one dataset as three binary CSR matrices (users x items)."""

    n_users: int
    n_items: int
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix

    @classmethod
    def from_frame(cls, df: pd.DataFrame, n_users: int | None = None, n_items: int | None = None) -> "InteractionData":
        """Build from a frame with user_idx, item_idx, split columns."""
        bad = set(df["split"].unique()) - set(SPLITS)
        if bad:
            raise ValueError(f"interactions.split has unknown values {sorted(bad)}; expected {SPLITS}")
        n_users = int(n_users if n_users is not None else df["user_idx"].max() + 1)
        n_items = int(n_items if n_items is not None else df["item_idx"].max() + 1)
        mats = {}
        for s in SPLITS:
            part = df[df["split"] == s]
            m = sp.csr_matrix(
                (np.ones(len(part), dtype=np.float32), (part["user_idx"].to_numpy(), part["item_idx"].to_numpy())),
                shape=(n_users, n_items),
            )
            m.sum_duplicates()
            m.data[:] = 1.0
            mats[s] = m
        return cls(n_users, n_items, mats["train"], mats["valid"], mats["test"])

    @property
    def n_train(self) -> int:
        return int(self.train.nnz)

    def train_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of the train interactions as int64 arrays, row-major order."""
        coo = self.train.tocoo()
        return coo.row.astype(np.int64), coo.col.astype(np.int64)

    def stats(self) -> dict[str, float]:
        n = self.train.nnz + self.valid.nnz + self.test.nnz
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": int(n),
            "train": int(self.train.nnz),
            "valid": int(self.valid.nnz),
            "test": int(self.test.nnz),
            "density": float(n) / max(1, self.n_users * self.n_items),
        }
