"""report.html the way a person sees it: rendered by headless Chromium, checked on the pixels.

Needs ``chromium`` on PATH. When it is missing, the test installs it once with
apt-get only if running as root with ``DPAUDIT_INSTALL_CHROMIUM=1``; otherwise
it is skipped with a message saying so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _chromium import CHROMIUM_FLAGS, find_browser
from _run_fixture import write_run

from dpaudit.reports import build_report

PASS_GREEN = (26, 127, 55)  # --pass in the report's CSS
FAIL_RED = (180, 35, 24)  # --fail
BASELINE_ORANGE = (217, 130, 43)  # the baseline's colour in the figures only


@pytest.fixture(scope="session")
def browser() -> str:
    found = find_browser()
    if found:
        return found
    if (
        os.environ.get("DPAUDIT_INSTALL_CHROMIUM") == "1"
        and hasattr(os, "geteuid")
        and os.geteuid() == 0
    ):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "update"], env=env, capture_output=True, timeout=600, check=False
        )
        subprocess.run(
            ["apt-get", "install", "-y", "chromium"],
            env=env,
            capture_output=True,
            timeout=900,
            check=False,
        )
        found = find_browser()
        if found:
            return found
        pytest.skip(
            "chromium could not be installed with apt-get; the rendered-report check was not run"
        )
    pytest.skip(
        "chromium is not on PATH: install it (apt-get install chromium), or run the tests as root with "
        "DPAUDIT_INSTALL_CHROMIUM=1 to install it automatically, to check the rendered report"
    )


def screenshot(browser: str, html: Path, out: Path, profile: Path, *, height: int) -> np.ndarray:
    """Render ``html`` offline at 1200 px wide; return the screenshot as an RGB uint8 array."""
    from PIL import Image

    command = [
        browser,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--screenshot={out}",
        f"--window-size=1200,{height}",
        html.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert out.is_file(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    with Image.open(out) as image:
        return np.asarray(image.convert("RGB"))


def near(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> int:
    """Pixels within ``tol`` of ``rgb`` in every channel."""
    return int((np.abs(pixels.astype(int) - np.array(rgb)).max(axis=2) <= tol).sum())


def non_white_fraction(pixels: np.ndarray) -> float:
    return float((pixels.min(axis=2) < 235).mean())


def test_rendered_report_shows_verdict_and_figures(browser, tmp_path):
    run = write_run(tmp_path / "runs", "render", report={"max_epsilon": 8, "max_auc": 0.6})
    build_report(run, formats=("html",))
    pixels = screenshot(
        browser,
        run / "report" / "report.html",
        tmp_path / "shot.png",
        tmp_path / "profile",
        height=6000,
    )
    assert pixels.shape[1] == 1200
    assert pixels.std() > 30, "the page renders blank"
    top = pixels[:700]
    assert near(top, PASS_GREEN) > 2000, "no green PASS verdict box at the top"
    assert near(top, FAIL_RED) < 50
    figures = near(pixels, BASELINE_ORANGE)
    assert figures > 3000, f"figures missing: only {figures} baseline-coloured pixels"
    # The figures sit in bands of the page: count rows that carry the baseline colour.
    rows = np.flatnonzero(
        (np.abs(pixels.astype(int) - np.array(BASELINE_ORANGE)).max(axis=2) <= 12).any(axis=1)
    )
    assert rows.max() - rows.min() > 1500, "expected several figures down the page"
    assert 0.05 < non_white_fraction(pixels[:2000]) < 0.6


def test_rendered_failing_report_shows_red_verdict(browser, tmp_path):
    run = write_run(tmp_path / "runs", "failing", seed=1, violation=True, report={"max_auc": 0.5})
    build_report(run, formats=("html",))
    top = screenshot(
        browser,
        run / "report" / "report.html",
        tmp_path / "shot.png",
        tmp_path / "profile",
        height=900,
    )[:700]
    assert near(top, FAIL_RED) > 2000, "no red FAIL verdict box at the top"
    assert near(top, PASS_GREEN) < near(top, FAIL_RED)
