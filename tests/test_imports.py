"""Every ``from blast_ray... import name`` in the package, tests, benchmarks and jobs resolves.

Names imported inside test functions are only checked when that test runs; a refactor that drops
a helper used by one slow test would otherwise surface only in CI. Parsed, not executed: cheap.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# modules that import an optional engine at module level (DGL lives in its own venv)
OPTIONAL = {"blast_ray.models.graph_backend.dgl_backend"}


def _imports(files):
    for path in sorted(files):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("blast_ray"):
                if node.module not in OPTIONAL:
                    yield path, node.lineno, node.module, [a.name for a in node.names]


def _missing(files) -> list[str]:
    missing = []
    for path, line, module, names in _imports(files):
        mod = importlib.import_module(module)
        for name in names:
            if name == "*" or hasattr(mod, name):
                continue
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{path}:{line}: from {module} import {name}")
    return missing


def test_every_blast_ray_import_resolves():
    files = [p for d in ("blast_ray", "tests", "benchmarks", "jobs") for p in (ROOT / d).rglob("*.py")]
    missing = _missing(files)
    assert not missing, "\n".join(missing)


def test_the_check_sees_a_dropped_name_inside_a_function(tmp_path):
    """Imports inside function bodies (where the CI failure hid) are seen; a real name passes."""
    f = tmp_path / "t.py"
    f.write_text("from blast_ray.graphs.stage import dense_knn\n\n\ndef f():\n"
                 "    from blast_ray.graphs.stage import no_such_helper\n")
    assert _missing([f]) == [f"{f}:5: from blast_ray.graphs.stage import no_such_helper"]
