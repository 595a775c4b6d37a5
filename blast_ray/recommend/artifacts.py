"""The recommend stage's artifacts: the ``recommendations/`` folder of partitioned Parquet with
:data:`RECOMMENDATIONS_SCHEMA` (user_idx, rank 1..K, item_idx, score), written by Ray Data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

RECOMMENDATIONS_DIR = "recommendations"

RECOMMENDATIONS_SCHEMA = pa.schema([
    ("user_idx", pa.int64()),
    ("rank", pa.int32()),
    ("item_idx", pa.int64()),
    ("score", pa.float32()),
])


def recommendation_frame(users: np.ndarray, top_items: np.ndarray, top_scores: np.ndarray) -> pd.DataFrame:
    """One block: users (B,), top_items / top_scores (B, K) -> B*K rows of the schema."""
    k = top_items.shape[1]
    return pd.DataFrame({
        "user_idx": np.repeat(np.asarray(users, dtype=np.int64), k),
        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(users)),
        "item_idx": np.asarray(top_items).ravel().astype(np.int64),
        "score": np.asarray(top_scores).ravel().astype(np.float32),
    })


def recommendations_uri(out) -> str:
    """URI of the recommendations folder of a recommend output (where Ray Data writes/reads)."""
    return out.uri(RECOMMENDATIONS_DIR)


def load_recommendations(output, user_idx: int | None = None) -> pd.DataFrame:
    """The recommendations of a committed recommend output (only ``user_idx``'s when given),
    sorted by (user_idx, rank)."""
    import pyarrow.dataset as ds

    data = ds.dataset(output.store.path(*output.parts, RECOMMENDATIONS_DIR), format="parquet",
                      filesystem=output.store.fs, schema=RECOMMENDATIONS_SCHEMA)
    table = data.to_table(filter=None if user_idx is None else ds.field("user_idx") == int(user_idx))
    return table.to_pandas().sort_values(["user_idx", "rank"], ignore_index=True)
