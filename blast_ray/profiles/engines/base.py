"""The engine interface and the engine-independent answer loop: generate, parse, retry, fall back.

An engine here is a ``TextGenerator``: ``generate(prompts) -> answers`` for a list of prompt
strings. ``answer_with_retries`` runs it with the method's rule: a failed parse is retried with the
stricter prompt up to ``max_retries`` times, then the row gets the deterministic fallback text and
``fallback=True``. (The ``vllm`` engine runs the same rule as passes of a Ray Data LLM processor,
see ``engines/vllm.py``.)
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from blast_ray.profiles.parsing import fallback_profile, parse_profile
from blast_ray.profiles.prompts import STRICT_PREFIX, render_prompt

log = logging.getLogger("blast_ray.profiles")


class TextGenerator(Protocol):
    name: str  # engine name recorded on every profile row
    model: str  # model name/path recorded on every profile row

    def generate(self, prompts: list[str]) -> list[str]:
        """One answer string per prompt (same order)."""
        ...


def parse_answer(answer: str, strict: bool) -> tuple[dict[str, str] | None, str]:
    """Parse one answer; a strict-prompt answer continues ``STRICT_PREFIX``, so prepend it."""
    if strict:
        parsed, why = parse_profile(STRICT_PREFIX + answer)
        if parsed is not None:
            return parsed, why
    return parse_profile(answer)


def answer_with_retries(
    gen: TextGenerator,
    kinds: list[str],
    fields: list[dict[str, Any]],
    category: str,
    prompt_version: str,
    max_retries: int,
) -> list[dict[str, Any]]:
    """Profiles for a batch: dicts with text, reasoning, fallback, attempts, raw, error."""
    n = len(kinds)
    results: list[dict[str, Any] | None] = [None] * n
    last_raw = [""] * n
    last_err = [""] * n
    pending = list(range(n))
    for attempt in range(max_retries + 1):
        if not pending:
            break
        strict = attempt > 0
        prompts = [render_prompt(kinds[i], fields[i], category, prompt_version, strict=strict) for i in pending]
        answers = gen.generate(prompts)
        if len(answers) != len(prompts):
            raise RuntimeError(f"engine {gen.name} returned {len(answers)} answers for {len(prompts)} prompts")
        still = []
        for i, ans in zip(pending, answers):
            parsed, why = parse_answer(ans, strict)
            last_raw[i] = ans
            if parsed is None:
                last_err[i] = why
                still.append(i)
            else:
                results[i] = {"text": parsed["summarization"], "reasoning": parsed["reasoning"],
                              "fallback": False, "attempts": attempt + 1, "error": why}  # why: '' or SALVAGED
        pending = still
    for i in pending:
        fb = fallback_profile(kinds[i], fields[i], category)
        results[i] = {"text": fb["summarization"], "reasoning": fb["reasoning"], "fallback": True,
                      "attempts": max_retries + 1, "error": last_err[i]}
    if pending:
        log.info("%s: %d of %d answers unparseable after %d attempt(s): fell back", gen.name, len(pending), n,
                 max_retries + 1)
    for i in range(n):
        results[i]["raw"] = last_raw[i][:2000]
    return results  # type: ignore[return-value]
