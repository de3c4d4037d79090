"""User-facing errors.

Every error caused by bad input (a malformed file, an out-of-range option, an
unknown name) is raised as a :class:`DpauditError`. The CLI prints its message
on one line and exits with code 2; only ``--debug`` shows a traceback. Messages
name the file, line or option at fault so that the user can fix it without
reading code.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class DpauditError(Exception):
    """An error the user can fix; printed as one line, exit code 2."""

    exit_code = 2


class PreconditionError(DpauditError):
    """What one attack (or one part of the attack stage) needs is missing from these inputs.

    Too few reference models for LiRA, no population sample for RMIA, texts too
    short to score or to test for memorization, no canary, no PII span: the
    attack stage records the attack as ``skipped: <message>`` (``status.json``,
    the console line, the report's warnings) and runs the rest. Called directly,
    it is an ordinary :class:`DpauditError` (one line, exit code 2).
    """


class ConfigError(DpauditError):
    """A configuration value or key is invalid.

    Args:
        message: what is wrong.
        key: the dotted setting at fault (``section.key``), used to point at
            its line in a TOML file.
    """

    def __init__(self, message: str, key: str | None = None):
        self.key = key
        super().__init__(message)


class InputError(DpauditError):
    """An input file is missing or malformed.

    Args:
        path: the file at fault.
        message: what is wrong.
        line: 1-based line number, when the problem sits on one line.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return a ' (did you mean X?)' suffix for the closest choice, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> DpauditError:
    """Build the error for an unknown registry name, with a suggestion."""
    choices = sorted(choices)
    return DpauditError(
        f"unknown {kind} {name!r}{did_you_mean(name, choices)}; choose from: {', '.join(choices)}"
    )
