"""Versioned prompt templates and the input fields they are rendered from (method section 1).

A profile's *input fields* are a plain dict of strings/lists built from the ETL tables; the prompt
text is a pure function of (fields, category, prompt version). The profile key hashes exactly
(kind, prompt version, model, fields), so a change to any of them, and nothing else, regenerates it.

Example::

    >>> from blast_ray.profiles.prompts import render_prompt, profile_key
    >>> f = {"title": "Toy Story", "description": "Released in 1995.", "brand": "",
    ...      "categories": ["Animation", "Comedy"], "reviews": []}
    >>> "Toy Story" in render_prompt("item", f, category="movies")
    True
    >>> len(profile_key("item", "v1", "template", f))
    16
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from typing import Any

from blast_ray.store.hashing import stable_hash

KINDS = ("item", "user")

#: Appended on a retry after an unparseable answer. It ends with the opening of the JSON object so
#: that even a base (non-instruct) model continues inside the schema; the parser prepends
#: ``STRICT_PREFIX`` to the continuation.
STRICT_NOTE = (
    "\nIMPORTANT: your previous answer was not valid JSON. Reply with ONE JSON object with exactly the "
    'two string keys "summarization" and "reasoning", and nothing else.\n'
)
STRICT_PREFIX = '{"summarization": "'

# Characters kept per free-text field: bounds the prompt length (reviews can be long).
MAX_FIELD_CHARS = 600


@lru_cache(maxsize=None)
def load_template(kind: str, version: str = "v1") -> str:
    """The template file ``prompts/<kind>_<version>.txt`` (str.format placeholders)."""
    if kind not in KINDS:
        raise ValueError(f"profile kind must be one of {KINDS}, got {kind!r}")
    res = files("blast_ray.profiles").joinpath("prompts", f"{kind}_{version}.txt")
    if not res.is_file():
        raise ValueError(f"no prompt template for kind={kind!r} version={version!r} (expected prompts/{kind}_{version}.txt)")
    return res.read_text(encoding="utf-8")


def clip(text: Any, n: int = MAX_FIELD_CHARS) -> str:
    """A field as one clean line of at most ``n`` characters ('' for None/NaN)."""
    if text is None or (isinstance(text, float) and text != text):
        return ""
    s = " ".join(str(text).split())
    return s if len(s) <= n else s[: n - 3].rstrip() + "..."


def _or_unknown(s: str) -> str:
    return s if s else "unknown"


def render_prompt(kind: str, fields: dict[str, Any], category: str, version: str = "v1", strict: bool = False) -> str:
    """The prompt text of one profile. ``strict``: the retry variant (see ``STRICT_NOTE``)."""
    tpl = load_template(kind, version)
    if kind == "item":
        reviews = fields.get("reviews") or []
        text = tpl.format(
            category=category,
            title=_or_unknown(fields.get("title", "")),
            description=_or_unknown(fields.get("description", "")),
            brand=_or_unknown(fields.get("brand", "")),
            categories=_or_unknown(", ".join(fields.get("categories") or [])),
            reviews="\n".join(f"- {r}" for r in reviews) if reviews else "(no reviews)",
        )
    else:
        lines = []
        for it in fields.get("items") or []:
            line = f"- {_or_unknown(it.get('title', ''))}"
            if it.get("profile"):
                line += f"\n  Item profile: {it['profile']}"
            if it.get("review"):
                line += f"\n  The user's review: {it['review']}"
            lines.append(line)
        text = tpl.format(
            category=category,
            about=_or_unknown(fields.get("about", "")),
            items="\n".join(lines) if lines else "(no items)",
        )
    if strict:
        text = text.rstrip() + "\n" + STRICT_NOTE + STRICT_PREFIX
    return text


def profile_key(kind: str, prompt_version: str, model: str, fields: dict[str, Any]) -> str:
    """Content key of a profile: changes iff the prompt version, the model or an input field does."""
    return stable_hash({"kind": kind, "prompt_version": prompt_version, "model": model, "fields": fields})
