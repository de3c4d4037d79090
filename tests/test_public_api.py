"""Every public name of every subpackage imports, and importing the packages stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = [
    "dpaudit.datasets",
    "dpaudit.trainers",
    "dpaudit.attacks",
    "dpaudit.audit",
    "dpaudit.reports",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_imports(package):
    module = importlib.import_module(package)
    names = getattr(module, "__all__", [])
    assert names, f"{package} exports nothing"
    for name in names:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_importing_packages_imports_no_torch():
    code = "import sys, dpaudit, dpaudit.datasets, dpaudit.trainers, dpaudit.attacks, dpaudit.audit; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"


def test_top_level_api():
    import dpaudit

    assert callable(dpaudit.audit_checkpoint)
    assert dpaudit.__version__


def test_layering_subpackages_import_only_to_their_left():
    """datasets -> trainers -> attacks -> audit -> reports: no module imports from a package to its right."""
    import ast
    from pathlib import Path

    order = ["datasets", "trainers", "attacks", "audit", "reports"]
    root = Path(importlib.import_module("dpaudit").__file__).parent
    for i, pkg in enumerate(order):
        for path in (root / pkg).glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ImportFrom)
                    and node.module
                    and node.module.startswith("dpaudit.")
                ):
                    parts = node.module.split(".")
                    if len(parts) > 1 and parts[1] in order:
                        assert order.index(parts[1]) <= i, f"{path.name} imports {node.module}"
