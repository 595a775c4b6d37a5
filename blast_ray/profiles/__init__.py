"""LLM user/item profiles (method section 1) generated on Ray Data with pluggable engines.

Public surface: ``run`` (the stage), ``load_profiles`` (read a committed output, from
``blast_ray.profiles.artifacts``), the pure helpers
``render_prompt``, ``profile_key``, ``parse_profile``, ``fallback_profile``.
"""

from blast_ray.profiles.parsing import fallback_profile, parse_profile
from blast_ray.profiles.prompts import profile_key, render_prompt

__all__ = ["run", "load_profiles", "render_prompt", "profile_key", "parse_profile", "fallback_profile"]


def __getattr__(name):  # the stage pulls in Ray/pandas: import it lazily
    if name == "load_profiles":
        from blast_ray.profiles import artifacts

        return artifacts.load_profiles
    if name == "run":
        from blast_ray.profiles import stage

        return getattr(stage, name)
    raise AttributeError(name)
