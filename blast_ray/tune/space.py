"""Search spaces for ``blast tune``: one YAML file per model under ``configs/spaces/``.

A space file maps dotted config keys to a distribution, plus two reserved keys::

    # configs/spaces/lightgcn.yaml
    fixed:                      # applied to every trial and to the best configuration
      train.model: lightgcn
      augment.enabled: false
    fallback:                   # the simpler model this one extends; evaluated as trial 1
      train.n_layers_ui: 0      # LightGCN with 0 layers is BPR-MF
    train.lr: {loguniform: [1.0e-4, 1.0e-2]}
    train.l2_weight: {choice: [0.0, 1.0e-5, 1.0e-4, 1.0e-3]}
    train.n_layers_ui: {choice: [0, 1, 2, 3, 4]}

Distributions (bounds inclusive unless said):

- ``loguniform: [a, b]``   floats, 0 < a < b, log-uniform
- ``uniform: [a, b]``      floats, a < b
- ``quniform: [a, b, q]``  floats a..b rounded to multiples of q (q > 0)
- ``qloguniform: [a, b, q]`` log-uniform, rounded to multiples of q
- ``randint: [a, b]``      integers a..b, **both inclusive**
- ``choice: [v1, v2, ...]`` one of the listed values (numbers, strings, booleans)

Only ``train.*``, ``graphs.*`` and ``augment.*`` keys may be tuned: a trial re-runs at most the
graphs and augment stages (cached per fingerprint in the store); the ETL, profiles and features come
from the base config once. ``train.epochs`` is set by ``--max-epochs``, never sampled.

Structure errors (:func:`load_space`) and values the pipeline config rejects
(:meth:`SearchSpace.check_against`) fail with a one-line :class:`SpaceError` naming the file and key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

DISTRIBUTIONS = ("loguniform", "uniform", "quniform", "qloguniform", "randint", "choice")
TUNABLE_SECTIONS = ("train", "graphs", "augment")
RESERVED_KEYS = ("fixed", "fallback")
NOT_TUNABLE = {
    "train.epochs": "the trial length is set by --max-epochs (the final run keeps the config's epochs)",
    "train.eval_every": "trials validate every epoch (the scheduler compares trials per epoch)",
    "train.num_workers": "a trial is one single-process training",
    "train.warm_start_from": "a trial starts from a fresh initialisation",
    "augment.num_blocks": "it changes how the augment stage runs, not what it computes",
    "graphs.num_blocks": "it changes how the graphs stage runs, not what it computes",
}


class SpaceError(ValueError):
    """A search-space file is malformed or names a value the config rejects; the message names the key."""


@dataclass(frozen=True)
class Param:
    """One tuned key: ``key`` (dotted, e.g. ``train.lr``), ``kind`` (one of DISTRIBUTIONS), ``args``."""

    key: str
    kind: str
    args: tuple[Any, ...]

    def domain(self):
        """The Ray Tune sampling domain of this parameter."""
        from ray import tune

        a = self.args
        if self.kind == "choice":
            return tune.choice(list(a))
        if self.kind == "randint":
            return tune.randint(int(a[0]), int(a[1]) + 1)  # Tune's upper bound is exclusive
        return {
            "loguniform": lambda: tune.loguniform(a[0], a[1]),
            "uniform": lambda: tune.uniform(a[0], a[1]),
            "quniform": lambda: tune.quniform(a[0], a[1], a[2]),
            "qloguniform": lambda: tune.qloguniform(a[0], a[1], a[2]),
        }[self.kind]()

    def contains(self, value: Any) -> bool:
        """True when ``value`` can be drawn from this distribution (up to float rounding)."""
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) or _same_number(value, c) for c in self.args)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        lo, hi = self.args[0], self.args[1]
        if self.kind == "randint":
            return float(value).is_integer() and lo <= value <= hi
        if not lo - 1e-12 <= value <= hi + 1e-12:
            return False
        if self.kind in ("quniform", "qloguniform"):
            q = self.args[2]
            return abs(value / q - round(value / q)) < 1e-6
        return True

    def probe_values(self) -> list[Any]:
        """Values the config must accept: every choice, or both bounds."""
        if self.kind == "choice":
            return list(self.args)
        return [self.args[0], self.args[1]]


def _same_number(a: Any, b: Any) -> bool:
    return (not isinstance(a, bool) and not isinstance(b, bool) and isinstance(a, (int, float))
            and isinstance(b, (int, float)) and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0))


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search-space file: tuned params, fixed values, and the fallback point."""

    name: str  # file stem, e.g. "blast"
    source: str  # the file it came from
    params: tuple[Param, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    fallback: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.params)

    def param(self, key: str) -> Param:
        return next(p for p in self.params if p.key == key)

    def param_space(self) -> dict[str, Any]:
        """Ray Tune ``param_space``: flat ``{dotted key: domain}``."""
        return {p.key: p.domain() for p in self.params}

    def as_dict(self) -> dict[str, Any]:
        """Plain form (hashed into the experiment name, written to the summary)."""
        return {"name": self.name, "fixed": dict(self.fixed), "fallback": dict(self.fallback),
                "params": {p.key: {p.kind: list(p.args)} for p in self.params}}

    def check_against(self, base_values: dict[str, Any], build: Callable[[dict[str, Any]], Any]) -> None:
        """Check every key and value against the pipeline config.

        ``base_values``: the base config as a nested plain dict (``cfg.to_dict()``), used to check
        that each dotted key exists. ``build(values)``: builds and validates a config with the dotted
        ``values`` applied (raising ``ValueError``); called with the fixed values plus each choice /
        bound of each parameter, and with the fixed values plus the fallback point.
        """
        for key in (*self.fixed, *self.keys):
            section, _, name = key.partition(".")
            if not isinstance(base_values.get(section), dict) or name not in base_values[section]:
                valid = ", ".join(sorted(base_values.get(section, {}))) if isinstance(base_values.get(section), dict) else ""
                self._fail(key, f"not a config key{'; keys of ' + section + ' are ' + valid if valid else ''}")
        try:
            build(dict(self.fixed))
        except ValueError as e:
            self._fail(next(iter(self.fixed), "fixed"), f"the fixed values are rejected by the config: {_first_line(e)}")
        for p in self.params:
            for v in p.probe_values():
                try:
                    build({**self.fixed, p.key: v})
                except ValueError as e:
                    self._fail(p.key, f"value {v!r} is rejected by the config: {_first_line(e)}")
        if self.fallback:
            try:
                build({**self.fixed, **self.fallback})
            except ValueError as e:
                self._fail("fallback", f"the fallback point is rejected by the config: {_first_line(e)}")

    def _fail(self, key: str, msg: str) -> None:
        raise SpaceError(f"search space {self.source}: key '{key}': {msg}")


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _number(source: str, key: str, kind: str, x: Any) -> float:
    if isinstance(x, bool):
        raise SpaceError(f"search space {source}: key '{key}': {kind} bounds must be numbers, got {x!r}")
    if isinstance(x, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(x)
        except ValueError:
            pass
    if not isinstance(x, (int, float)):
        raise SpaceError(f"search space {source}: key '{key}': {kind} bounds must be numbers, got {x!r}")
    return x


def parse_param(source: str, key: str, spec: Any) -> Param:
    """One ``key: {kind: args}`` entry -> :class:`Param` (structure and bounds checked)."""
    def fail(msg: str) -> None:
        raise SpaceError(f"search space {source}: key '{key}': {msg}")

    section, dot, name = key.partition(".")
    if not dot or not name or "." in name:
        fail("must be a dotted config key section.name, e.g. train.lr")
    if section not in TUNABLE_SECTIONS:
        fail(f"only {', '.join(s + '.*' for s in TUNABLE_SECTIONS)} keys can be tuned "
             "(a trial re-runs at most the graphs and augment stages)")
    if key in NOT_TUNABLE:
        fail(f"cannot be tuned: {NOT_TUNABLE[key]}")
    if not isinstance(spec, dict) or len(spec) != 1:
        fail(f"must be one distribution, e.g. {{loguniform: [1.0e-4, 1.0e-2]}}; distributions are {', '.join(DISTRIBUTIONS)}")
    kind, args = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        fail(f"unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
    if not isinstance(args, list) or not args:
        fail(f"{kind} needs a list, e.g. {kind}: {'[a, b, q]' if kind.startswith('q') else '[a, b]'}")
    if kind == "choice":
        if any(isinstance(v, (dict, list)) for v in args):
            fail("choice values must be numbers, strings or booleans")
        if len({(type(v).__name__, v) for v in args}) != len(args):
            fail("choice lists a value twice")
        return Param(key, kind, tuple(args))
    want = 3 if kind.startswith("q") else 2
    if len(args) != want:
        fail(f"{kind} needs exactly {want} numbers, got {len(args)}")
    nums = [_number(source, key, kind, x) for x in args]
    lo, hi = nums[0], nums[1]
    if kind == "randint":
        if not all(float(x).is_integer() for x in nums):
            fail(f"randint bounds must be integers, got {args}")
        lo, hi = int(lo), int(hi)
        if lo > hi:
            fail(f"randint needs a <= b (both inclusive), got [{lo}, {hi}]")
        return Param(key, kind, (lo, hi))
    if not lo < hi:
        fail(f"{kind} needs a < b, got [{lo}, {hi}]")
    if kind in ("loguniform", "qloguniform") and lo <= 0:
        fail(f"{kind} needs 0 < a (use choice to include 0), got a = {lo}")
    if kind.startswith("q") and nums[2] <= 0:
        fail(f"{kind} needs q > 0, got {nums[2]}")
    return Param(key, kind, tuple(float(x) for x in nums))


def _dotted_mapping(source: str, what: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpaceError(f"search space {source}: key '{what}' must be a mapping of dotted config keys to values")
    for k in value:
        section, dot, name = str(k).partition(".")
        if not dot or not name:
            raise SpaceError(f"search space {source}: key '{what}.{k}' must be a dotted config key section.name")
        if section not in TUNABLE_SECTIONS:
            raise SpaceError(f"search space {source}: key '{what}.{k}': only "
                             f"{', '.join(s + '.*' for s in TUNABLE_SECTIONS)} keys can be set here")
        if isinstance(value[k], (dict, list)):
            raise SpaceError(f"search space {source}: key '{what}.{k}' must be a single value")
    return {str(k): v for k, v in value.items()}


def space_from_dict(data: Any, source: str = "<dict>", name: str = "space") -> SearchSpace:
    """Parse and structurally validate a space given as a plain dict (as read from YAML)."""
    if not isinstance(data, dict) or not data:
        raise SpaceError(f"search space {source}: must be a non-empty mapping of dotted config keys to distributions")
    fixed = _dotted_mapping(source, "fixed", data.get("fixed"))
    fallback = _dotted_mapping(source, "fallback", data.get("fallback"))
    params = tuple(parse_param(source, str(k), v) for k, v in data.items() if k not in RESERVED_KEYS)
    if not params:
        raise SpaceError(f"search space {source}: tunes no key; add e.g. train.lr: {{loguniform: [1.0e-4, 1.0e-2]}}")
    keys = {p.key for p in params}
    for k in fixed:
        if k in keys:
            raise SpaceError(f"search space {source}: key '{k}' is both fixed and tuned; keep one")
    for k, v in fallback.items():
        if k not in keys:
            raise SpaceError(f"search space {source}: key 'fallback.{k}' is not a tuned key of this space")
        p = next(p for p in params if p.key == k)
        if not p.contains(v):
            raise SpaceError(f"search space {source}: key 'fallback.{k}': {v!r} is not in {p.kind} {list(p.args)}; "
                             "the fallback model must be reachable by the search")
    return SearchSpace(name=name, source=source, params=params, fixed=fixed, fallback=fallback)


def load_space(path: str | Path) -> SearchSpace:
    """Read and structurally validate ``configs/spaces/<model>.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"search space {path} does not exist (see configs/spaces/)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpaceError(f"search space {path} is not valid YAML: {_first_line(e)}") from None
    return space_from_dict(data, source=str(path), name=path.stem)
