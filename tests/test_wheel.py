"""The built wheel works outside the source tree: packaged configs, py.typed, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_installs_and_runs_from_outside_the_tree(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = dist.glob("dpaudit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "dpaudit/py.typed" in names
    assert {"dpaudit/configs/quickstart.toml", "dpaudit/configs/minilm-classifier.toml"} <= names

    # A fresh venv; the dependencies come from this interpreter's site-packages through a .pth
    # (a path added that way is not a site directory, so the editable install's finder is not
    # loaded there: `import dpaudit` resolves to the wheel).
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --ignore-installed: the editable install's metadata is visible through deps.pth (and
    # through PYTHONPATH when an earlier test's Ray or Flower simulation set it), and pip
    # would call that "already satisfied" and install nothing.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run(
        [str(py), "-c", "import dpaudit; print(dpaudit.__file__)"],
        cwd=outside,
        capture_output=True,
        text=True,
        env=env,
    )
    assert where.returncode == 0, where.stderr
    assert str(env_dir) in where.stdout, where.stdout
    dpaudit = env_dir / "bin" / "dpaudit"
    shown = subprocess.run(
        [str(dpaudit), "config", "show", "quickstart"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert 'name = "demo"' in shown.stdout and "[train]" in shown.stdout
    helped = subprocess.run(
        [str(dpaudit), "demo", "--help"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert helped.returncode == 0 and "quickstart" in helped.stdout, helped.stderr
