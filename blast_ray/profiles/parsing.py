"""Parse an LLM answer into a profile, and the deterministic fallback text.

``parse_profile`` accepts the first JSON object in the text that passes the schema check
(``summarization``: non-empty string, ``reasoning``: string); failing that, an object that never
closes (small models keep adding keys until ``max_new_tokens``) is salvaged when its COMPLETE
leading members already pass the check (reason ``SALVAGED``, kept in the profile's ``error``
column); anything else is a parse failure with a one-line reason. ``fallback_profile`` builds a profile from the same input fields without a
model: it is the ``template`` engine's output and the last resort after failed retries.

Example::

    >>> from blast_ray.profiles.parsing import parse_profile
    >>> parse_profile('noise {"summarization": "Fans of puzzles.", "reasoning": "It is a puzzle."} tail')
    ({'summarization': 'Fans of puzzles.', 'reasoning': 'It is a puzzle.'}, '')
    >>> parse_profile('not json')[1]
    'no JSON object in the answer'
"""

from __future__ import annotations

import json
from typing import Any

# The method asks for about 200 words; a longer answer is cut, not rejected.
MAX_WORDS = 300
SALVAGED = "salvaged: unterminated JSON object, its complete leading members used"


def _limit_words(s: str, n: int = MAX_WORDS) -> str:
    words = s.split()
    return s.strip() if len(words) <= n else " ".join(words[:n])


def check_schema(obj: Any) -> str:
    """'' when ``obj`` is a valid profile object, else the reason it is not."""
    if not isinstance(obj, dict):
        return f"JSON value is a {type(obj).__name__}, not an object"
    s, r = obj.get("summarization"), obj.get("reasoning")
    if not isinstance(s, str) or not s.strip():
        return "missing or empty string field 'summarization'"
    if not isinstance(r, str):
        return "missing string field 'reasoning'"
    t = s.strip()
    if t.startswith("<") and t.endswith(">"):
        # small base models copy the "<...>" placeholder of the schema in the prompt
        return "'summarization' repeats the prompt's placeholder"
    return ""


def _skip_space(text: str, pos: int) -> int:
    """The first index at or after ``pos`` that is not whitespace (``len(text)`` if none)."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _leading_members(text: str, start: int) -> dict[str, Any]:
    """The complete ``"key": value`` members of the object opening at ``text[start] == '{'``, read
    until the first member that does not parse (an answer cut off by the token limit). A repeated
    key keeps its FIRST value (later repeats of a rambling model are noise)."""
    decoder = json.JSONDecoder()
    members: dict[str, Any] = {}
    pos, n = start + 1, len(text)
    while True:
        try:
            key, pos = decoder.raw_decode(text, _skip_space(text, pos))
        except json.JSONDecodeError:
            return members
        pos = _skip_space(text, pos)
        if not isinstance(key, str) or pos >= n or text[pos] != ":":
            return members
        try:
            value, pos = decoder.raw_decode(text, _skip_space(text, pos + 1))
        except json.JSONDecodeError:
            return members
        members.setdefault(key, value)
        pos = _skip_space(text, pos)
        if pos >= n or text[pos] != ",":
            return members
        pos += 1


def parse_profile(text: str) -> tuple[dict[str, str] | None, str]:
    """(profile, '') for the first schema-valid JSON object in ``text``; else (profile, SALVAGED)
    for the first unterminated object whose complete leading members pass the schema check; else
    (None, reason).

    >>> parse_profile('{"summarization": "Kids.", "reasoning": "Animated.", "brand": "x", "revi')[1] == SALVAGED
    True
    """
    if not isinstance(text, str) or not text.strip():
        return None, "empty answer"
    decoder = json.JSONDecoder()
    reason = "no JSON object in the answer"
    pos = text.find("{")
    while pos != -1:
        try:
            obj, _ = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            obj = None
            reason = "malformed JSON"
        if obj is not None:
            why = check_schema(obj)
            if not why:
                return {
                    "summarization": _limit_words(obj["summarization"]),
                    "reasoning": _limit_words(obj["reasoning"]),
                }, ""
            reason = why
        pos = text.find("{", pos + 1)
    if reason == "malformed JSON":
        pos = text.find("{")
        while pos != -1:
            members = _leading_members(text, pos)
            if members and not check_schema(members):
                return {
                    "summarization": _limit_words(members["summarization"]),
                    "reasoning": _limit_words(members["reasoning"]),
                }, SALVAGED
            pos = text.find("{", pos + 1)
    return None, reason


def fallback_profile(kind: str, fields: dict[str, Any], category: str) -> dict[str, str]:
    """Deterministic profile text built from the input fields (no model involved)."""
    if kind == "item":
        title = fields.get("title") or "This item"
        cats = ", ".join(fields.get("categories") or [])
        parts = [f"{title}."]
        if fields.get("description"):
            parts.append(fields["description"].rstrip(".") + ".")
        if fields.get("brand"):
            parts.append(f"Brand: {fields['brand']}.")
        if cats:
            parts.append(f"Users who enjoy {cats} {category} would enjoy it.")
        else:
            parts.append(f"Users looking for {category} like this one would enjoy it.")
        reviews = fields.get("reviews") or []
        if reviews:
            parts.append("Reviewers say: " + " | ".join(reviews[:3]))
        text = " ".join(parts)
    else:
        items = fields.get("items") or []
        titles = [it.get("title") for it in items if it.get("title")]
        parts = []
        if fields.get("about"):
            parts.append(f"About the user: {fields['about']}.")
        if titles:
            parts.append(f"This user is likely to enjoy {category} like: " + "; ".join(titles) + ".")
        else:
            parts.append(f"This user has no training interactions; no preference over {category} is known.")
        reviews = [it["review"] for it in items if it.get("review")]
        if reviews:
            parts.append("In their own words: " + " | ".join(reviews[:3]))
        text = " ".join(parts)
    return {"summarization": _limit_words(text), "reasoning": "deterministic text built from the input fields"}
