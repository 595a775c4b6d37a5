"""The ``template`` engine: no LLM, the deterministic text built from the input fields.

It is what `make run` uses on a machine without a GPU; the stage says so with a WARNING log line
and ``extra.engine_warning`` in its manifest.
"""

from __future__ import annotations

from typing import Any

from blast_ray.profiles.parsing import fallback_profile

TEMPLATE_MODEL = "template"


def template_profiles(kinds: list[str], fields: list[dict[str, Any]], category: str) -> list[dict[str, Any]]:
    """Profiles without a model (``fallback`` is False: the template IS the engine's output)."""
    out = []
    for kind, f in zip(kinds, fields):
        fb = fallback_profile(kind, f, category)
        out.append({"text": fb["summarization"], "reasoning": "template engine: " + fb["reasoning"],
                    "fallback": False, "attempts": 0, "error": "", "raw": ""})
    return out
