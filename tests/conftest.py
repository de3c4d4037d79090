"""Shared fixtures: small synthetic data, a CLI runner."""

from __future__ import annotations

import pytest
from click.testing import CliRunner


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner):
    """Invoke the dpaudit CLI; returns the click Result."""
    from dpaudit.cli import cli

    def _invoke(*args: str):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return _invoke
