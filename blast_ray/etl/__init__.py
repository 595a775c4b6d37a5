"""Spark ETL stage: published raw dumps -> interactions / users / items / reviews / rejects Parquet."""

from blast_ray.etl.readers import FormatError, read_raw
from blast_ray.etl.stage import raw_input_hash, run, run_etl
from blast_ray.etl.transform import clean_text, collapse_duplicates, kcore, split_per_user

__all__ = [
    "run", "run_etl", "raw_input_hash", "read_raw", "FormatError", "clean_text", "collapse_duplicates", "kcore",
    "split_per_user",
]
