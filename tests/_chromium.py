"""The headless Chromium the rendered- and printed-report tests drive (no network, no profile state)."""

from __future__ import annotations

import shutil

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH, or ``None``."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)
