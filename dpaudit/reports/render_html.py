"""``report.html``: one self-contained page for a privacy officer.

Inline CSS, figures embedded as base64 PNG ``data:`` URIs, no scripts and no
external URL, so the file reads offline, prints (print CSS) and can be archived
as is. Every value is escaped by Jinja2's autoescaping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dpaudit.reports import plots
from dpaudit.reports.html_template import CSS, TEMPLATE
from dpaudit.reports.view import build_view

__all__ = ["render_html", "report_figures"]


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def report_figures(
    report: Mapping[str, Any], curves: Mapping[str, Any] | None = None
) -> dict[str, str | None]:
    """The report's figures as ``data:image/png;base64,...`` URIs (``None`` where nothing to plot)."""
    figures = {
        "audit": plots.audit_plot(report),
        "roc": plots.roc_plot(report, curves or {}),
        "exposure": plots.exposure_plot(report),
        "pii": plots.pii_plot(report),
        "rounds": plots.rounds_plot(report),
        "fl_inversion": plots.inversion_plot(report),
    }
    return {name: (plots.png_data_uri(png) if png else None) for name, png in figures.items()}


def render_html(
    report: Mapping[str, Any],
    curves: Mapping[str, Any] | None = None,
    *,
    generated: str | None = None,
) -> str:
    """Render the report mapping as a self-contained HTML page.

    Args:
        report: the ``report.json`` mapping.
        curves: ROC curves ``{model: {attack: {"fpr", "tpr"}}}`` (from
            :func:`dpaudit.reports.collect.collect`); without them the ROC
            figure is left out and the tables remain.
        generated: time of rendering for the footer (omitted when ``None``).
    """
    from dpaudit.accounting import accountant_names

    template = _environment().from_string(TEMPLATE)
    accountants = {  # from the registry: a registered accountant is described with the others
        "rigorous": ", ".join(accountant_names(rigorous=True)),
        "approximate": ", ".join(accountant_names(rigorous=False)),
    }
    return template.render(
        v=build_view(report, generated=generated),
        plots=report_figures(report, curves),
        css=CSS,
        accountants=accountants,
    )
