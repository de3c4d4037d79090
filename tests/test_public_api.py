"""Every public name imports, importing stays light, and the layers import one way only."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import dpaudit

ROOT = Path(dpaudit.__file__).parent

# Layer of each top-level name under dpaudit/; a module may import only from layers <= its own.
LAYERS = {
    "datasets": 1,
    "trainers": 2,
    "attacks": 3,
    "audit": 4,
    "reports": 5,
    "workflows": 6,
    "cli": 7,
    "cli_options": 7,
    "cli_federated": 7,
    "cli_common": 7,
    "__main__": 8,  # python -m dpaudit (torchrun -m dpaudit train ...)
}
PLUMBING = 0  # errors, atomic, rundir, config, accounting, registry, runfiles, ...


def _layer(top: str) -> int:
    return LAYERS.get(top, PLUMBING)


def _packages() -> list[str]:
    names = ["dpaudit"]
    for info in pkgutil.iter_modules([str(ROOT)]):
        if info.ispkg:
            names.append(f"dpaudit.{info.name}")
    return names


@pytest.mark.parametrize("package", _packages())
def test_every_public_name_imports(package):
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None)
    if package in ("dpaudit.configs",):
        return
    assert names, f"{package} declares no __all__"
    for name in names:
        assert getattr(module, name) is not None, f"{package}.{name}"
    assert set(names) <= set(dir(module)), f"{package}: __dir__ misses part of __all__"


def test_a_bogus_public_name_is_caught(monkeypatch):
    """The check above fails on a name that does not resolve (the test can fail)."""
    monkeypatch.setattr(dpaudit, "__all__", [*dpaudit.__all__, "no_such_name"])
    with pytest.raises(AttributeError):
        for name in dpaudit.__all__:
            getattr(dpaudit, name)


def test_importing_packages_imports_no_torch():
    code = (
        "import sys, dpaudit, dpaudit.datasets, dpaudit.trainers, dpaudit.attacks, dpaudit.audit, "
        "dpaudit.workflows; print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"


def test_top_level_api():
    assert callable(dpaudit.audit_checkpoint) and callable(dpaudit.run)
    assert callable(dpaudit.load_config) and callable(dpaudit.build_report)
    assert dpaudit.__version__
    assert {"RunResult", "PrivacyLedger", "AttackScores", "EpsilonLowerBound"} <= set(dir(dpaudit))


def _imported_tops(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, top-level dpaudit name) of every import of dpaudit code, in any form."""
    found: list[tuple[int, str]] = []
    package = module.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "dpaudit" and len(parts) > 1:
                    found.append((node.lineno, parts[1]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = package[: len(package) - node.level]
                parts = base + (node.module.split(".") if node.module else [])
            else:
                parts = node.module.split(".") if node.module else []
            if not parts or parts[0] != "dpaudit":
                continue
            if len(parts) > 1:
                found.append((node.lineno, parts[1]))
            else:  # from dpaudit import reports
                found += [(node.lineno, alias.name) for alias in node.names]
    return found


def layering_violations(source: str, path: Path) -> list[str]:
    """Imports in ``source`` (the module at ``path`` under dpaudit/) that go against the layers."""
    rel = path.relative_to(ROOT)
    module = ".".join(("dpaudit", *rel.with_suffix("").parts))
    if rel.name == "__init__.py":
        module = module.rsplit(".", 1)[0] + "._"  # a package's own level
    own = _layer(rel.parts[0].removesuffix(".py"))
    bad = []
    for line, top in _imported_tops(ast.parse(source), module):
        if top.startswith("_") or top == "__version__":
            continue
        if _layer(top) > own:
            bad.append(f"{rel}:{line} imports dpaudit.{top} (layer {_layer(top)} > {own})")
    return bad


def test_layering_every_import_form():
    """plumbing <- datasets <- trainers <- attacks <- audit <- reports <- workflows <- cli."""
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == ROOT / "__init__.py":
            continue  # the API facade re-exports every layer lazily, by name
        problems += layering_violations(path.read_text(), path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        "from dpaudit import reports\n",
        "import dpaudit.reports.gate\n",
        "def f():\n    from dpaudit.workflows.run import run_all\n",
        "from ..reports import gate\n",
    ],
)
def test_layering_check_catches_every_form(source):
    assert layering_violations(source, ROOT / "datasets" / "loaders.py")


def test_layering_plumbing_imports_no_layer():
    assert layering_violations("from dpaudit.attacks import registry\n", ROOT / "config.py")
    assert not layering_violations("from dpaudit.errors import DpauditError\n", ROOT / "config.py")
