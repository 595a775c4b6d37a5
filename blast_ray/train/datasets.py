"""Readers for published splits used by tests and benchmarks before/without the ETL stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from blast_ray.data.interactions import InteractionData


def read_lattice_split(folder: str | Path, max_users: int | None = None) -> InteractionData:
    """Read a LATTICE-style split ({train,val,test}.json: user id -> item id list) as InteractionData.

    ``max_users`` keeps the first users (a real-data slice for fast tests); item ids are kept, so
    n_items stays that of the dataset. Example: ``read_lattice_split("../shared/data/amazon-baby-5core")``.
    """
    folder = Path(folder)
    n_users = len(json.loads((folder / "user2id.json").read_text()))
    n_items = len(json.loads((folder / "item2id.json").read_text()))
    frames = []
    for fname, split in (("train.json", "train"), ("val.json", "valid"), ("test.json", "test")):
        d = json.loads((folder / fname).read_text())
        u = np.fromiter((int(k) for k, v in d.items() for _ in v), dtype=np.int64)
        i = np.fromiter((int(x) for v in d.values() for x in v), dtype=np.int64)
        frames.append(pd.DataFrame({"user_idx": u, "item_idx": i, "split": split}))
    df = pd.concat(frames, ignore_index=True)
    if max_users is not None:
        df = df[df["user_idx"] < max_users]
        n_users = max_users
    return InteractionData.from_frame(df, n_users, n_items)
