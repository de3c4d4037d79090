"""Report figures: matplotlib (Agg, no pyplot state) → PNG bytes → ``data:`` URIs.

Every function takes the report mapping (and, for ROC curves, the curves read
from ``metrics.json``) and returns PNG bytes, or ``None`` when the run holds
nothing to plot. Figures are built on :class:`matplotlib.figure.Figure`
directly, so no GUI backend and no global pyplot state is touched; the PNG
carries no timestamp. Target and baseline use the same two colours everywhere
(blue and orange, distinguishable with the common colour-vision deficiencies)
and different markers and line styles, so the figures also read in greyscale.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from dpaudit.errors import DpauditError
from dpaudit.reports.fmt import as_float, eps, fixed

__all__ = [
    "COLORS",
    "audit_plot",
    "exposure_plot",
    "figure_png",
    "pii_plot",
    "png_data_uri",
    "roc_plot",
    "tradeoff_plot",
]

COLORS = {"target": "#1f5fa8", "baseline": "#d9822b"}
STYLES = {
    "target": {"linestyle": "-", "marker": "o"},
    "baseline": {"linestyle": "--", "marker": "s"},
}
_GREY = "#777777"
_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes (Agg), without a creation timestamp."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding in HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _rc():
    import matplotlib

    return matplotlib.rc_context(_RC)


def _number(value: Any, field: str) -> float:
    """A required number of the report as a float (``"inf"`` → ``math.inf``, as :func:`as_float`).

    Raises:
        DpauditError: ``value`` is missing or not a number (the report is malformed).
    """
    x = as_float(value)
    if x is None:
        raise DpauditError(f"report field {field} is not a number: {value!r}")
    return x


def _label(report: Mapping[str, Any], model: str) -> str:
    summary = report["models"][model]["summary"]
    e = as_float(summary.get("epsilon"))
    if e is None:
        return model
    return f"{model} (ε = {eps(e)})" if math.isfinite(e) else f"{model} (no DP)"


# -- ROC ---------------------------------------------------------------------------------------


def roc_plot(
    report: Mapping[str, Any], curves: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]]
) -> bytes | None:
    """Log-log ROC of every attack, target against baseline (one panel per attack).

    Points with FPR or TPR of 0 cannot be drawn on log axes and are dropped; the
    axes start at half the smallest non-zero FPR the data can resolve.
    """
    attacks = sorted({a for model in curves.values() for a in model})
    if not attacks:
        return None
    ncols = min(3, len(attacks))
    nrows = math.ceil(len(attacks) / ncols)
    with _rc():
        fig = _figure(3.6 * ncols, 3.3 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        low = 1e-3
        for model in curves:
            for attack in curves[model]:
                n0 = report["models"][model]["attacks"][attack]["n_nonmember"]
                low = min(low, 0.5 / max(int(n0), 1))
        for i, attack in enumerate(attacks):
            ax = axes[i // ncols][i % ncols]
            ax.plot([low, 1], [low, 1], color=_GREY, linewidth=0.8, linestyle=":", label="chance")
            for model in ("target", "baseline"):
                curve = curves.get(model, {}).get(attack)
                if not curve:
                    continue
                pts = [
                    (f, t)
                    for f, t in zip(curve["fpr"], curve["tpr"], strict=True)
                    if f > 0 and t > 0
                ]
                if not pts:
                    continue
                auc = report["models"][model]["attacks"][attack]["auc"]
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    color=COLORS[model],
                    linestyle=STYLES[model]["linestyle"],
                    linewidth=1.6,
                    drawstyle="steps-post",
                    label=f"{_label(report, model)}, AUC {fixed(auc)}",
                )
            ax.axvline(1e-3, color=_GREY, linewidth=0.6, linestyle="--")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(low, 1)
            ax.set_ylim(low, 1.05)
            ax.set_title(f"attack: {attack}")
            ax.set_xlabel("false-positive rate")
            ax.set_ylabel("true-positive rate")
            ax.legend(loc="lower right", frameon=False)
            ax.grid(True, which="major", linewidth=0.3, alpha=0.6)
        for j in range(len(attacks), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        return figure_png(fig)


# -- audit -------------------------------------------------------------------------------------


def audit_plot(report: Mapping[str, Any]) -> bytes | None:
    """Claimed ε per accountant (bars) against the empirical lower bound(s) (vertical lines)."""
    target = report["models"]["target"]
    privacy, audit = target.get("privacy"), target.get("audit")
    if privacy is None and audit is None:
        return None
    upper = (privacy or {}).get("epsilon_upper") or (audit or {}).get("epsilon_upper") or {}
    finite: dict[str, float] = {}
    for name, value in upper.items():
        x = as_float(value)
        if x is not None and math.isfinite(x):
            finite[name] = x
    kinds = (privacy or {}).get("accountant_kind", {})
    lows: list[tuple[str, float, float]] = []
    for model in ("target", "baseline"):
        a = report["models"].get(model, {}).get("audit")
        if a:
            field = f"models.{model}.audit.epsilon_lower"
            lows.append(
                (
                    model,
                    _number(a["epsilon_lower"]["value"], field + ".value"),
                    _number(a["epsilon_lower"]["confidence"], field + ".confidence"),
                )
            )
    if not finite and not lows:
        return None
    with _rc():
        fig = _figure(7.2, 0.45 * max(len(finite), 2) + 1.7)
        ax = fig.subplots()
        names = sorted(finite, key=lambda k: (kinds.get(k) != "rigorous", k))
        tags = {"rigorous": "rigorous", "approximate": "approx."}
        for y, name in enumerate(names):
            approximate = kinds.get(name) == "approximate"
            ax.barh(
                y,
                finite[name],
                color="#9dbbe0" if approximate else COLORS["target"],
                hatch="//" if approximate else None,
                edgecolor=COLORS["target"],
                height=0.6,
            )
            ax.text(finite[name], y, f" {eps(finite[name])}", va="center", fontsize=8)
        ax.set_yticks(
            range(len(names)), [f"{n} ({tags.get(kinds.get(n), 'as stated')})" for n in names]
        )
        top = max([*finite.values(), *(v for _, v, _ in lows), 0.1])
        for model, value, conf in lows:
            ax.axvline(
                value,
                color="#b2182b" if model == "target" else COLORS["baseline"],
                linewidth=2.0,
                linestyle="-" if model == "target" else "--",
                label=f"{model}: audited ε ≥ {eps(value)} ({conf:.0%} confidence)",
            )
        if not names:
            ax.set_yticks([])
            ax.text(
                0.5,
                0.5,
                "no finite claimed ε (not trained with DP)",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color=_GREY,
            )
        ax.set_xlim(0, top * 1.18)
        ax.invert_yaxis()
        ax.set_xlabel(
            "ε (bars: claimed upper bound of the target per accountant; lines: empirical lower bounds)"
        )
        if lows:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
        ax.grid(True, axis="x", linewidth=0.3, alpha=0.6)
        return figure_png(fig)


# -- canaries ----------------------------------------------------------------------------------


def exposure_plot(report: Mapping[str, Any]) -> bytes | None:
    """Canary exposure (mean, min–max bars) against insertions, target vs baseline, with log2|R|."""
    series = {}
    ceiling = None
    for model in ("target", "baseline"):
        canaries = report["models"].get(model, {}).get("canaries")
        if canaries:
            series[model] = {int(k): v for k, v in canaries["exposure_by_repetition"].items()}
            ceiling = as_float(canaries.get("max_possible_exposure")) or ceiling
    if not series:
        return None
    xs = sorted({k for s in series.values() for k in s})
    pos = {k: i for i, k in enumerate(xs)}
    with _rc():
        fig = _figure(7.2, 3.9)
        ax = fig.subplots()
        for offset, (model, s) in zip((-0.08, 0.08), series.items(), strict=False):
            keys = sorted(s)
            x = [pos[k] + offset for k in keys]
            field = f"models.{model}.canaries.exposure_by_repetition"
            mean = [_number(s[k]["mean"], f"{field}.{k}.mean") for k in keys]
            lo = [
                m - _number(s[k]["min"], f"{field}.{k}.min")
                for k, m in zip(keys, mean, strict=True)
            ]
            hi = [
                _number(s[k]["max"], f"{field}.{k}.max") - m
                for k, m in zip(keys, mean, strict=True)
            ]
            ax.errorbar(
                x,
                mean,
                yerr=[lo, hi],
                color=COLORS[model],
                capsize=3,
                linewidth=1.6,
                label=f"{_label(report, model)}: mean (bars: min–max)",
                **STYLES[model],
            )
        if ceiling:
            ax.axhline(
                ceiling,
                color="#b2182b",
                linestyle=":",
                linewidth=1.2,
                label=f"log2|R| = {ceiling:.1f} bits: secret ranked first (fully exposed)",
            )
            ax.set_ylim(0, ceiling * 1.12)
        ax.set_xticks(range(len(xs)), [str(k) for k in xs])
        ax.set_xlabel("times the canary was inserted into training (0 = never: chance level)")
        ax.set_ylabel("exposure (bits)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
        ax.grid(True, axis="y", linewidth=0.3, alpha=0.6)
        return figure_png(fig)


# -- PII ---------------------------------------------------------------------------------------


def pii_plot(report: Mapping[str, Any]) -> bytes | None:
    """Share of training PII values extracted by sampling, per kind, target vs baseline."""
    rates: dict[str, dict[str, float]] = {}
    for model in ("target", "baseline"):
        pii = report["models"].get(model, {}).get("pii")
        for kind, row in ((pii or {}).get("by_kind") or {}).items():
            if row.get("extraction_rate") is not None:
                rates.setdefault(kind, {})[model] = _number(
                    row["extraction_rate"], f"models.{model}.pii.by_kind.{kind}.extraction_rate"
                )
    if not rates:
        return None
    kinds = sorted(rates)
    with _rc():
        fig = _figure(7.2, 2.8)
        ax = fig.subplots()
        width = 0.38
        present = [m for m in ("target", "baseline") if m in report["models"]]
        for k, model in enumerate(present):
            values = [rates[kind].get(model, 0.0) for kind in kinds]
            bars = ax.bar(
                [i + (k - (len(present) - 1) / 2) * width for i in range(len(kinds))],
                values,
                width,
                color=COLORS[model],
                hatch=None if model == "target" else "//",
                edgecolor="white",
                label=_label(report, model),
            )
            for bar, v in zip(bars, values, strict=True):
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    v,
                    f"{100 * v:.0f}%",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set_ylabel("training values extracted")
        ax.set_ylim(0, max(0.05, *(v for r in rates.values() for v in r.values())) * 1.25)
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        ax.legend(frameon=False)
        return figure_png(fig)


# -- comparison --------------------------------------------------------------------------------


def tradeoff_plot(rows: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Privacy–leakage–utility scatter of several runs (``compare``).

    Left: best MIA AUC against claimed ε; right: utility against claimed ε.
    Non-private runs (ε = ∞) sit at the right edge, marked "∞".
    """
    points = [r for r in rows if as_float(r.get("epsilon")) is not None]
    if not points:
        return None
    claimed = [_number(r["epsilon"], "epsilon") for r in points]
    finite = [e for e in claimed if math.isfinite(e)]
    right = max(finite) * 3 if finite else 10.0
    if len(finite) == len(points):
        right = max(finite) * 1.5
    left = min(finite) / 2 if finite else 0.1

    def x_of(r: Mapping[str, Any]) -> float:
        e = _number(r["epsilon"], "epsilon")
        return e if math.isfinite(e) else right

    with _rc():
        fig = _figure(9.0, 3.4)
        axes = fig.subplots(1, 2)
        metric = next((r.get("utility_metric") for r in points if r.get("utility_metric")), None)
        lower_better = metric is not None and any(w in metric for w in ("perplexity", "loss"))
        panels = (
            ("best_auc", "best MIA AUC (leakage; lower is better)"),
            (
                "utility",
                f"{metric or 'utility'} ({'lower' if lower_better else 'higher'} is better)",
            ),
        )
        any_inf = len(finite) < len(points)
        for ax, (column, label) in zip(axes, panels, strict=True):
            for r in points:
                y = as_float(r.get(column))
                if y is None or math.isnan(y):
                    continue
                dp = math.isfinite(_number(r["epsilon"], "epsilon"))
                violation = r.get("audit_verdict") == "violation"
                ax.scatter(
                    [x_of(r)],
                    [y],
                    s=42,
                    color=COLORS["target"] if dp else COLORS["baseline"],
                    marker="o" if dp else "s",
                    edgecolors="#b2182b" if violation else "none",
                    linewidths=2 if violation else 0,
                    zorder=3,
                )
                name = str(r.get("run")) + (" (audit violation)" if violation else "")
                ax.annotate(
                    name, (x_of(r), y), textcoords="offset points", xytext=(5, 4), fontsize=7
                )
            ax.set_xscale("log")
            ax.set_xlim(left, right * 1.8)
            if any_inf:
                ax.axvline(right / 1.6, color=_GREY, linewidth=0.5, linestyle=":")
                ax.text(
                    right,
                    ax.get_ylim()[0],
                    "∞\n(no DP)",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color=_GREY,
                )
            ax.set_xlabel("claimed ε (log scale)")
            ax.set_ylabel(label.replace("_", " "))
            ax.grid(True, linewidth=0.3, alpha=0.6)
        return figure_png(fig)
