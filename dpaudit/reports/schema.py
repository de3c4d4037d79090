"""The ``report.json`` schema: its version, a validator and the accountant kinds.

The schema is one typed definition, :class:`dpaudit.runfiles.report.Report`
(docs/report-schema.md is generated from it). :func:`report_problems` lists
every way a mapping departs from it; :func:`validate_report` raises on a
report that does. A ``schema_version`` this dpaudit does not read is refused
with one line naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dpaudit.errors import DpauditError, InputError
from dpaudit.runfiles.audit import AUDIT_VERDICTS
from dpaudit.runfiles.base import problems, summary, to_plain
from dpaudit.runfiles.report import REPORT_SCHEMA_VERSION, Report

__all__ = [
    "APPROXIMATE_ACCOUNTANTS",
    "AUDIT_VERDICTS",
    "MODEL_NAMES",
    "REPORT_SCHEMA_VERSION",
    "RIGOROUS_ACCOUNTANTS",
    "Report",
    "accountant_kind",
    "parse_report",
    "report_problems",
    "validate_report",
]

RIGOROUS_ACCOUNTANTS = ("rdp", "prv", "pld")
"""Accountants whose ε is a proven upper bound (up to numerical error they bound)."""

APPROXIMATE_ACCOUNTANTS = ("gdp", "edgeworth")
"""Accountants whose ε is an approximation (CLT / Edgeworth expansion), not a bound."""

MODEL_NAMES = ("target", "baseline")


def accountant_kind(name: str) -> str:
    """``rigorous``, ``approximate`` or ``unknown`` (not registered) for an accountant name."""
    from dpaudit.accounting import ACCOUNTANTS, is_rigorous

    if name not in ACCOUNTANTS:
        return "unknown"
    return "rigorous" if is_rigorous(name) else "approximate"


def report_problems(report: Any) -> list[str]:
    """Every way ``report`` departs from :class:`~dpaudit.runfiles.report.Report` (empty: valid).

    Each problem is one line, ``report.<dotted key>: <what is wrong>``. A
    ``schema_version`` this dpaudit does not read is the only problem listed.
    """
    if not isinstance(report, Mapping):
        return [f"report: expected an object, got {type(report).__name__}"]
    version = report.get("schema_version")
    if version not in Report.READS:
        return [f"report: {Report.unsupported(version)}"]
    try:
        Report.model_validate(to_plain(report))
    except ValidationError as exc:
        found = problems(exc, "report")
    else:
        return []
    models = report.get("models")
    if report.get("revealed") is not True and isinstance(models, Mapping):
        for name, model in models.items():
            line = f"report: models.{name}.recovered: present in a report that is not revealed"
            if isinstance(model, Mapping) and "recovered" in model and line not in found:
                found.append(line)
    return found


def parse_report(report: Any, *, source: str | Path | None = None) -> Report:
    """``report`` as a :class:`~dpaudit.runfiles.report.Report`; raises as :func:`validate_report`."""

    def fail(message: str) -> DpauditError:
        return InputError(source, message) if source is not None else DpauditError(message)

    if not isinstance(report, Mapping):
        raise fail("not a dpaudit report (expected a JSON object)")
    version = report.get("schema_version")
    if version not in Report.READS:
        raise fail(Report.unsupported(version))
    try:
        return Report.model_validate(to_plain(report))
    except ValidationError as exc:
        raise fail(f"not a valid dpaudit report: {summary(exc, 'report')}") from None


def validate_report(report: Any, *, source: str | Path | None = None) -> Mapping[str, Any]:
    """Return ``report`` when it matches the schema, else raise.

    Raises:
        InputError: naming ``source`` (when given): a ``schema_version`` this
            dpaudit does not read (``schema_version 'X' of report.json is not
            supported (this dpaudit reads 'Y')``), or the first few problems.
        DpauditError: the same without a file.
    """
    parse_report(report, source=source)
    return report
