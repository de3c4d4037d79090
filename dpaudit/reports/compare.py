"""Compare runs: one row per run of privacy claimed, leakage measured and utility kept.

:func:`compare_runs` reads each run's ``report/report.json`` (building it from
the run directory when it is missing or outdated), takes one model's headline
numbers (``models.<model>.summary``, docs/report-schema.md) and writes
``comparison.csv`` and a self-contained ``comparison.html`` with a
privacy–leakage–utility scatter plot, both atomically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dpaudit.atomic import atomic_write_text, read_json
from dpaudit.errors import DpauditError, InputError
from dpaudit.reports import fmt
from dpaudit.reports.schema import report_problems

__all__ = ["COLUMNS", "compare_runs", "comparison_row", "load_or_build_report"]

COLUMNS = (
    "run",
    "run_dir",
    "model",
    "epsilon",
    "privacy_unit",
    "primary_accountant",
    "delta",
    "epsilon_lower",
    "audit_verdict",
    "best_auc",
    "best_auc_attack",
    "tpr_at_0.1%_fpr",
    "best_tpr_attack",
    "max_exposure",
    "pii_extraction_rate",
    "memorization_rate",
    "utility_metric",
    "utility",
    "policy_verdict",
)
"""Columns of ``comparison.csv``, in order (see docs/report-schema.md, "comparison.csv")."""

CSV_FILE = "comparison.csv"
HTML_FILE = "comparison.html"


def load_or_build_report(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``report/report.json``; built (JSON only) when missing or of another schema.

    Raises:
        DpauditError: not a run directory, or the run cannot be reported on.
    """
    path = Path(run_dir) / "report" / "report.json"
    if path.is_file():
        try:
            data = read_json(path)
        except InputError:
            data = None
        if isinstance(data, dict) and not report_problems(data):
            return data
    from dpaudit.reports import build_report

    return build_report(run_dir, formats=("json",))


def _float(value: Any) -> float:
    x = fmt.as_float(value)
    return float("nan") if x is None else x


def comparison_row(
    report: Mapping[str, Any], run_dir: str | Path, *, model: str = "target"
) -> dict[str, Any]:
    """The :data:`COLUMNS` of one report (``nan`` where not measured, ``inf`` for no DP)."""
    if model not in report["models"]:
        raise DpauditError(f"{run_dir}: no {model!r} model in the report")
    s = report["models"][model]["summary"]
    auc, tpr, utility = (
        s.get("max_auc") or {},
        s.get("max_tpr_at_low_fpr") or {},
        s.get("utility") or {},
    )
    return {
        "run": report["run"]["name"],
        "run_dir": str(run_dir),
        "model": model,
        "epsilon": _float(s.get("epsilon")),
        "privacy_unit": (report["models"][model].get("privacy") or {}).get("unit", "example"),
        "primary_accountant": s.get("primary_accountant"),
        "delta": _float(s.get("delta")),
        "epsilon_lower": _float(s.get("epsilon_lower")),
        "audit_verdict": s.get("audit_verdict"),
        "best_auc": _float(auc.get("value")),
        "best_auc_attack": auc.get("attack"),
        "tpr_at_0.1%_fpr": _float(tpr.get("value")),
        "best_tpr_attack": tpr.get("attack"),
        "max_exposure": _float(s.get("max_exposure")),
        "pii_extraction_rate": _float(s.get("pii_extraction_rate")),
        "memorization_rate": _float(s.get("memorization_rate")),
        "utility_metric": utility.get("metric"),
        "utility": _float(utility.get("value")),
        "policy_verdict": report["policy"]["verdict"] if model == "target" else None,
    }


_CONSOLE = (
    ("run", "run", None),
    ("epsilon", "ε", "{:.2f}"),
    ("privacy_unit", "unit", None),
    ("epsilon_lower", "ε_lb", "{:.2f}"),
    ("audit_verdict", "audit", None),
    ("best_auc", "AUC", "{:.3f}"),
    ("tpr_at_0.1%_fpr", "TPR@0.1%", "{:.3f}"),
    ("max_exposure", "exposure", "{:.1f}"),
    ("pii_extraction_rate", "PII", "{:.2f}"),
    ("utility", "utility", "{:.3f}"),
    ("policy_verdict", "policy", None),
)


def console_table(frame: Any) -> str:
    """The comparison as a narrow text table: the headline columns, rounded (— = not measured).

    The full-precision values are in ``comparison.csv``.
    """
    import math

    def cell(value: Any, fmt: str | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        if fmt is None:
            return str(value)
        if isinstance(value, float) and math.isinf(value):
            return "∞"
        return fmt.format(value)

    header = [title for _, title, _ in _CONSOLE]
    rows = [
        [cell(rec.get(key), fmt) for key, _, fmt in _CONSOLE]
        for rec in frame.to_dict(orient="records")
    ]
    from dpaudit.reports.fmt import text_table

    return "\n".join(text_table(header, rows))


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dpaudit run comparison</title>
<style>
body { font-family: "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; color: #1f2328; max-width: 1200px;
       margin: 0 auto; padding: 24px 32px; font-size: 14px; line-height: 1.45; }
h1 { font-size: 24px; } .muted { color: #57606a; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; margin: 12px 0; }
th, td { border-bottom: 1px solid #d0d7de; padding: 5px 7px; text-align: right; vertical-align: top; }
th { background: #f6f8fa; } td { white-space: nowrap; } td.text, th.text { text-align: left; }
.badge { font-weight: 700; padding: 1px 7px; border-radius: 4px; color: #fff; font-size: 11px; }
.pass, .consistent { background: #1a7f37; } .fail, .violation { background: #b42318; }
.not-private { background: #c46a13; } .none { background: #6e7781; } .inconclusive { background: #9a6700; }
figure { margin: 12px 0; text-align: center; } img { max-width: 100%; border: 1px solid #d0d7de; }
@media print { body { max-width: none; padding: 0; } .badge { print-color-adjust: exact; -webkit-print-color-adjust: exact; } }
</style></head><body>
<h1>Run comparison</h1>
<p class="muted">{{ rows|length }} runs, model "{{ model }}". Claimed ε is the primary accountant's (∞: trained without
differential privacy); leakage is the best attack's; lower AUC, TPR, exposure and extraction are better.</p>
{% if plot %}<figure><img alt="Scatter plots of leakage and utility against claimed epsilon, one point per run" src="{{ plot }}"></figure>{% endif %}
<table><thead><tr><th class="text">Run</th><th>Claimed ε</th><th>δ</th><th>ε lower bound</th><th class="text">Audit</th>
<th>Best MIA AUC</th><th>TPR @ 0.1% FPR</th><th>Max exposure (bits)</th><th>PII extracted</th><th>Memorized</th>
<th class="text">Utility</th><th class="text">Policy</th></tr></thead><tbody>
{% for r in rows %}<tr><td class="text">{{ r.run }}<br><span class="muted">{{ r.run_dir }}</span></td><td>{{ r.epsilon }}</td><td>{{ r.delta }}</td>
<td>{{ r.epsilon_lower }}</td><td class="text"><span class="badge {{ r.audit_class }}">{{ r.audit_verdict }}</span></td>
<td>{{ r.best_auc }}</td><td>{{ r.tpr }}</td><td>{{ r.max_exposure }}</td><td>{{ r.pii }}</td><td>{{ r.mem }}</td>
<td class="text">{{ r.utility }}<br><span class="muted">{{ r.utility_metric }}</span></td><td class="text"><span class="badge {{ r.policy_class }}">{{ r.policy }}</span></td></tr>
{% endfor %}</tbody></table>
<p class="muted">Generated by dpaudit {{ version }}{% if generated %} on {{ generated }}{% endif %}; the same numbers are in {{ csv }}.</p>
</body></html>
"""


def _html(rows: list[dict[str, Any]], model: str, plot: str | None) -> str:
    import jinja2

    from dpaudit import __version__

    shown = []
    for r in rows:
        attack = f" ({r['best_auc_attack']})" if r["best_auc_attack"] else ""
        tpr_attack = f" ({r['best_tpr_attack']})" if r["best_tpr_attack"] else ""
        shown.append(
            {
                "run": r["run"],
                "run_dir": r["run_dir"],
                "epsilon": fmt.eps(r["epsilon"])
                + ("" if r.get("privacy_unit") in (None, "example") else f" ({r['privacy_unit']})"),
                "delta": fmt.sci(r["delta"]),
                "epsilon_lower": fmt.eps(r["epsilon_lower"]),
                "audit_verdict": (r["audit_verdict"] or "not audited").upper(),
                "audit_class": r["audit_verdict"] or "none",
                "best_auc": fmt.fixed(r["best_auc"]) + attack,
                "tpr": fmt.fixed(r["tpr_at_0.1%_fpr"]) + tpr_attack,
                "max_exposure": fmt.num(r["max_exposure"], 3),
                "pii": fmt.pct(r["pii_extraction_rate"]),
                "mem": fmt.pct(r["memorization_rate"]),
                "utility": fmt.num(r["utility"], 4) if r["utility_metric"] else fmt.DASH,
                "utility_metric": (r["utility_metric"] or "").replace("_", " "),
                "policy": (r["policy_verdict"] or "—").upper(),
                "policy_class": r["policy_verdict"] or "none",
            }
        )
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return env.from_string(_HTML).render(
        rows=shown, model=model, plot=plot, version=__version__, generated=generated, csv=CSV_FILE
    )


def compare_runs(
    run_dirs: Iterable[str | Path], out_dir: str | Path, *, model: str = "target"
) -> Any:
    """Compare runs; write ``comparison.csv`` and ``comparison.html`` into ``out_dir``.

    Args:
        run_dirs: run directories (a report is built for any run lacking one).
        out_dir: destination directory (created if needed).
        model: the model compared (``target`` by default; ``baseline`` for the contrast).

    Returns:
        A :class:`pandas.DataFrame` with one row per run and :data:`COLUMNS`.

    Raises:
        DpauditError: no run given, or a run that cannot be reported on.
    """
    import pandas as pd

    from dpaudit.reports.plots import png_data_uri, tradeoff_plot

    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise DpauditError("compare needs at least one run directory")
    rows = [comparison_row(load_or_build_report(p), p, model=model) for p in run_dirs]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / CSV_FILE, frame.to_csv(index=False))
    png = tradeoff_plot(rows)
    atomic_write_text(out_dir / HTML_FILE, _html(rows, model, png_data_uri(png) if png else None))
    return frame
