"""Stable hashes of config values: the basis of stage fingerprints and prompt keys.

``stable_hash(x)`` is the sha256 of the canonical JSON of ``to_plain(x)`` (sorted keys, no
whitespace): equal values give equal hashes across processes and Python versions, whatever the
container types (a tuple and a list with the same items hash alike; a pydantic model or a
dataclass hashes like the dict of its fields).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from pydantic import BaseModel


def to_plain(obj: Any) -> Any:
    """JSON-able plain values: models/dataclasses -> dicts of fields, tuples -> lists, str keys."""
    if isinstance(obj, BaseModel):
        return {name: to_plain(getattr(obj, name)) for name in type(obj).model_fields}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    return obj


def stable_hash(obj: Any, n: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj``, first ``n`` hex digits."""
    blob = json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]
