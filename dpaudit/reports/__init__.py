"""Reports: HTML, Markdown and JSON from a run directory; the release gate; run comparison.

Reports read the run directory only (docs/run-directory.md), never live
objects, so any report can be rebuilt later from disk alone, and rebuilding
gives a byte-identical ``report.json`` (the time of rendering appears only in
the HTML and Markdown footers). The schema of ``report.json`` is in
docs/report-schema.md.

- :func:`build_report`: read a run, write ``<run>/report/report.{html,md,json}``,
  return the ``report.json`` mapping; :func:`write_report` does the same and
  returns the paths written.
- :func:`collect_report`: the ``report.json`` mapping, without writing anything.
- :func:`write_report_files`: write an already collected report.
- :func:`~dpaudit.reports.gate.gate`: pass/fail a ``report.json`` against thresholds.
- :func:`~dpaudit.reports.compare.compare_runs`: one table over several runs.

Formats live in the registry :data:`REPORT_FORMATS` (``html``, ``md``,
``json``): a :class:`ReportFormat` names its file and writes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dpaudit.atomic import atomic_write_text
from dpaudit.errors import DpauditError
from dpaudit.registry import Registry
from dpaudit.reports.collect import RunData, collect, collect_report
from dpaudit.reports.schema import (
    REPORT_SCHEMA_VERSION,
    parse_report,
    report_problems,
    validate_report,
)
from dpaudit.runfiles.io import write_run_file

__all__ = [
    "FORMATS",
    "REPORT_FILES",
    "REPORT_FORMATS",
    "REPORT_SCHEMA_VERSION",
    "ReportFormat",
    "RunData",
    "build_report",
    "collect",
    "collect_report",
    "report_problems",
    "validate_report",
    "write_report",
    "write_report_files",
]

REPORT_DIR = "report"


@dataclass(frozen=True)
class ReportFormat:
    """One report format.

    Attributes:
        filename: the file written in the report directory (``report.html``).
        write: ``write(report, path, *, curves, generated) -> path``: render the
            validated ``report.json`` mapping into ``path`` atomically.
    """

    filename: str
    write: Callable[..., Path]


REPORT_FORMATS: Registry[ReportFormat] = Registry("report format")
"""Format name (``report.formats``, ``dpaudit report --format``) → :class:`ReportFormat`."""


def _revealed(report: Mapping[str, Any]) -> bool | None:
    """A report that prints recovered secrets (``--reveal``) is written owner-only."""
    return True if report.get("revealed") else None


def _write_json(
    report: Mapping[str, Any], path: Path, *, curves: Any = None, generated: str | None = None
) -> Path:
    return write_run_file(path, parse_report(report), private=_revealed(report))


def _write_md(
    report: Mapping[str, Any], path: Path, *, curves: Any = None, generated: str | None = None
) -> Path:
    from dpaudit.reports.render_md import render_markdown

    return atomic_write_text(
        path, render_markdown(report, generated=generated), private=_revealed(report)
    )


def _write_html(
    report: Mapping[str, Any], path: Path, *, curves: Any = None, generated: str | None = None
) -> Path:
    from dpaudit.reports.render_html import render_html

    return atomic_write_text(
        path, render_html(report, curves, generated=generated), private=_revealed(report)
    )


REPORT_FORMATS.register("html", ReportFormat("report.html", _write_html))
REPORT_FORMATS.register("md", ReportFormat("report.md", _write_md))
REPORT_FORMATS.register("json", ReportFormat("report.json", _write_json))


def __getattr__(name: str) -> Any:
    """``FORMATS`` and ``REPORT_FILES``: computed from :data:`REPORT_FORMATS`, plug-ins included."""
    if name == "FORMATS":
        return REPORT_FORMATS.names()
    if name == "REPORT_FILES":
        return {n: f.filename for n, f in REPORT_FORMATS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "FORMATS", "REPORT_FILES"])


def _formats(formats: Iterable[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(formats))
    for f in out:
        REPORT_FORMATS.get(f)
    return out


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_report_files(
    report: Mapping[str, Any],
    out_dir: str | Path,
    *,
    formats: Iterable[str] | None = None,
    curves: Mapping[str, Any] | None = None,
    generated: str | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and/or ``report.html`` atomically into ``out_dir``.

    Args:
        report: a mapping from :func:`collect_report` (validated again here).
        out_dir: destination directory (created if needed).
        formats: names in :data:`REPORT_FORMATS` (``html``, ``md``, ``json``);
            ``None``: every registered format.
        curves: ROC curves for the HTML figure (:attr:`RunData.curves`).
        generated: footer time of the HTML and Markdown; default: now (UTC).
            ``report.json`` never holds it.

    Returns:
        ``{format: path written}``.

    Raises:
        DpauditError: an unknown format or an invalid report.
    """
    names = _formats(REPORT_FORMATS.names() if formats is None else formats)
    validate_report(report)
    out_dir = Path(out_dir)
    generated = generated if generated is not None else _now()
    written: dict[str, Path] = {}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            fmt = REPORT_FORMATS.get(name)
            written[name] = fmt.write(
                report, out_dir / fmt.filename, curves=curves, generated=generated
            )
    except OSError as exc:  # a read-only location, a file in the way, a full disk
        where = exc.filename or out_dir
        raise DpauditError(f"{where}: cannot write the report ({exc.strerror or exc})") from None
    return written


def _build(
    run_dir: str | Path,
    *,
    reveal: bool | None,
    formats: Iterable[str] | None,
    out_dir: str | Path | None,
    policy: Mapping[str, Any] | None,
    generated: str | None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    data = collect(run_dir, reveal=reveal, policy_overrides=policy)
    if formats is None:
        formats = (data.report.get("config", {}).get("report") or {}).get(
            "formats"
        ) or REPORT_FORMATS.names()
    target = Path(out_dir) if out_dir is not None else data.run_dir / REPORT_DIR
    written = write_report_files(
        data.report, target, formats=formats, curves=data.curves, generated=generated
    )
    return data.report, written


def build_report(
    run_dir: str | Path,
    *,
    reveal: bool | None = None,
    formats: Iterable[str] | None = None,
    out_dir: str | Path | None = None,
    policy: Mapping[str, Any] | None = None,
    generated: str | None = None,
) -> dict[str, Any]:
    """Read a run directory and write its report; return the ``report.json`` mapping.

    Args:
        run_dir: the run directory.
        reveal: list recovered secrets and PII (read from ``recovered.json``);
            ``None`` follows the run's ``report.reveal`` (off by default).
        formats: formats to write; ``None`` follows the run's ``report.formats``.
        out_dir: where to write; default ``<run_dir>/report``.
        policy: thresholds overriding the run's ``[report]`` policy.
        generated: footer time of the HTML and Markdown (default: now).

    Raises:
        DpauditError: not a run directory, no target model, a malformed run
            file (named in the message), or an unknown format.
    """
    report, _ = _build(
        run_dir, reveal=reveal, formats=formats, out_dir=out_dir, policy=policy, generated=generated
    )
    return report


def write_report(
    run_dir: str | Path,
    *,
    reveal: bool | None = None,
    formats: Iterable[str] | None = None,
    out_dir: str | Path | None = None,
    policy: Mapping[str, Any] | None = None,
    generated: str | None = None,
) -> list[Path]:
    """:func:`build_report`, returning the files written (in ``formats`` order) instead of the mapping."""
    _, written = _build(
        run_dir, reveal=reveal, formats=formats, out_dir=out_dir, policy=policy, generated=generated
    )
    return list(written.values())
