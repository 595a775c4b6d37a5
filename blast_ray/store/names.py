"""Names that become store path parts: dataset names, run ids, stage names.

One pattern for all of them, ``[A-Za-z0-9][A-Za-z0-9._-]*`` (and never ``.`` or ``..``, which the
pattern already excludes by its first character), at most ``MAX_NAME_LEN`` characters. ASCII only,
so a look-alike (fullwidth dot, one-dot leader) or a percent escape cannot pass for something else.

>>> validate_name("2026-12-01T09-30-00-abc123", "run id")
'2026-12-01T09-30-00-abc123'
>>> validate_name("..", "run id")
Traceback (most recent call last):
...
ValueError: run id '..' is not a valid name: it must match [A-Za-z0-9][A-Za-z0-9._-]* (letters, digits, '.', '_', '-'; starting with a letter or digit), at most 128 characters
"""

from __future__ import annotations

import re

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
MAX_NAME_LEN = 128
_NAME_RE = re.compile(NAME_PATTERN)


def is_valid_name(value: object) -> bool:
    """True when ``value`` is a str matching ``NAME_PATTERN`` in full, at most ``MAX_NAME_LEN`` long."""
    return isinstance(value, str) and len(value) <= MAX_NAME_LEN and _NAME_RE.fullmatch(value) is not None


def validate_name(value: object, what: str) -> str:
    """``value`` unchanged when it is a valid store name, else a ValueError naming ``what``
    (e.g. "run id", "dataset.name") and the rule."""
    if not is_valid_name(value):
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:60] + f"... ({len(value) if isinstance(value, str) else '?'} chars)"
        raise ValueError(
            f"{what} {shown} is not a valid name: it must match {NAME_PATTERN} (letters, digits, '.', '_', '-'; "
            f"starting with a letter or digit), at most {MAX_NAME_LEN} characters"
        )
    return value  # type: ignore[return-value]
