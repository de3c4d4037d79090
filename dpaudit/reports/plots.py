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
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dpaudit.errors import DpauditError
from dpaudit.reports.fmt import as_float, eps, fixed

__all__ = [
    "COLORS",
    "audit_plot",
    "exposure_plot",
    "rounds_plot",
    "inversion_plot",
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


def rounds_plot(report: Mapping[str, Any]) -> bytes | None:
    """Held-out loss after each federated round (``run.federation``), target against baseline."""
    federation = (report.get("run") or {}).get("federation") or {}
    series = {
        model: [as_float(v) for v in fed.get("eval_loss_by_round") or []]
        for model, fed in federation.items()
    }
    series = {m: s for m, s in series.items() if any(v is not None for v in s)}
    if not series:
        return None
    with _rc():
        fig = _figure(7.2, 3.4)
        ax = fig.subplots()
        for model, values in series.items():
            points = [(i + 1, v) for i, v in enumerate(values) if v is not None]
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                color=COLORS.get(model, "#444444"),
                marker="o",
                markersize=3,
                linewidth=1.6,
                label=_label(report, model),
            )
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel("held-out loss (lower is better)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
        ax.grid(True, linewidth=0.3, alpha=0.6)
        return figure_png(fig)


def inversion_plot(report: Mapping[str, Any]) -> bytes | None:
    """ROUGE-L of the span reconstruction and recall of the token-set leak, by defence
    (``run.federated_attacks.inversion``), at the smallest text length, one line per batch size."""
    sec = ((report.get("run") or {}).get("federated_attacks") or {}).get("inversion")
    cells = (sec or {}).get("cells") or []
    if not cells:
        return None
    length = min(int(c["length"]) for c in cells)
    cells = [c for c in cells if int(c["length"]) == length]
    labels: list[str] = []
    for c in cells:
        if c["label"] not in labels:
            labels.append(str(c["label"]))
    sizes = sorted({int(c["batch_size"]) for c in cells})
    with _rc():
        fig = _figure(7.2, 3.6)
        ax = fig.subplots()
        for k, b in enumerate(sizes):
            color = ("#2166ac", "#b2182b", "#1b7837", "#762a83", "#e08214")[k % 5]
            by = {c["label"]: c for c in cells if int(c["batch_size"]) == b}
            xs = [i for i, lab in enumerate(labels) if lab in by]
            ax.plot(
                xs,
                [as_float(by[labels[i]]["rouge_l"]) for i in xs],
                color=color,
                marker="o",
                linewidth=1.6,
                label=f"B = {b}: ROUGE-L (span)",
            )
            leak = [(i, by[labels[i]].get("leak_recall")) for i in xs]
            leak = [(i, v) for i, v in leak if v is not None]
            if leak:
                ax.plot(
                    [p[0] for p in leak],
                    [as_float(p[1]) for p in leak],
                    color=color,
                    marker="s",
                    linestyle="--",
                    linewidth=1.0,
                    label=f"B = {b}: token-set leak recall",
                )
        ax.set_xticks(range(len(labels)), [_wrap(lab, 16) for lab in labels], fontsize=7)
        ax.set_ylim(-0.03, 1.05)
        ax.set_ylabel(f"recovered (texts cut to {length} tokens)")
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=2, frameon=False, fontsize=7
        )
        ax.grid(True, linewidth=0.3, alpha=0.6)
        return figure_png(fig)


# -- PII ---------------------------------------------------------------------------------------


def _wrap(label: str, width: int = 22) -> str:
    """Wrap a long label onto lines of about ``width`` characters, at spaces, ``_``, ``-`` or ``/``."""
    if len(label) <= width:
        return label
    lines = [""]
    for token in re.split(r"(?<=[\s_/-])", label):
        if lines[-1] and len(lines[-1]) + len(token) > width:
            lines.append("")
        lines[-1] += token
    return "\n".join(line.strip() for line in lines)


def _pii_figure(report: Mapping[str, Any]) -> Any:
    """The figure of :func:`pii_plot` (``None`` when nothing to plot); build it under :func:`_rc`."""
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
    present = [m for m in ("target", "baseline") if m in report["models"]]
    # Horizontal bars, one group per kind: the kind names sit on the y axis, one per line, so
    # they cannot run into each other however many kinds there are; the height grows with them.
    height = 0.16 * max(len(present), 1) + 0.12
    fig = _figure(7.2, 1.5 + len(kinds) * height * 1.45)
    ax = fig.subplots()
    top = max(0.05, *(v for r in rates.values() for v in r.values()))
    for k, model in enumerate(present):
        values = [rates[kind].get(model, 0.0) for kind in kinds]
        bars = ax.barh(
            [i + (k - (len(present) - 1) / 2) * 0.38 for i in range(len(kinds))],
            values,
            0.38,
            color=COLORS[model],
            hatch=None if model == "target" else "//",
            edgecolor="white",
            label=_label(report, model),
        )
        for bar, v in zip(bars, values, strict=True):
            ax.text(
                v + top * 0.01,
                bar.get_y() + bar.get_height() / 2,
                f"{100 * v:.0f}%",
                ha="left",
                va="center",
                fontsize=7,
            )
    ax.set_yticks(range(len(kinds)), [_wrap(kind) for kind in kinds])
    ax.set_ylim(len(kinds) - 0.5, -0.5)  # first kind on top
    ax.set_xlim(0, top * 1.2)
    ax.set_xlabel("training values extracted")
    ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.grid(True, axis="x", linewidth=0.3, alpha=0.6)
    ax.legend(
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=len(present),
        frameon=False,
        borderaxespad=0.2,
    )
    return fig


def pii_plot(report: Mapping[str, Any]) -> bytes | None:
    """Share of training PII values extracted by sampling, per kind, target vs baseline.

    Horizontal bars with the kinds on the y axis (long names wrapped); the figure
    grows with the number of kinds, so the labels never overlap.
    """
    with _rc():
        fig = _pii_figure(report)
        return None if fig is None else figure_png(fig)


# -- comparison --------------------------------------------------------------------------------

NO_DP_LABEL = "no DP\n(ε = ∞)"


def _eps_ticks(values: Sequence[float], low: float, high: float, gap: float = 0.14) -> list[float]:
    """The distinct ε of the runs as ticks of a log axis ``[low, high]``, thinned so that
    neighbouring ticks are at least ``gap`` of the axis width apart (their labels cannot collide)."""
    span = math.log(high) - math.log(low)
    ticks: list[float] = []
    for x in sorted(set(values)):
        if not ticks or (math.log(x) - math.log(ticks[-1])) / span >= gap:
            ticks.append(x)
    return ticks


def _tradeoff_figure(rows: Sequence[Mapping[str, Any]]) -> Any:
    """The figure of :func:`tradeoff_plot` (``None`` when nothing to plot); build it under :func:`_rc`."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    points = [r for r in rows if as_float(r.get("epsilon")) is not None]
    if not points:
        return None
    claimed = [_number(r["epsilon"], "epsilon") for r in points]
    finite = [e for e in claimed if math.isfinite(e)]
    any_inf = len(finite) < len(points)
    left = min(finite) / 2 if finite else 0.1
    right = max(finite) * 2 if finite else 10.0

    fig = _figure(9.0, 3.6)
    metric = next((r.get("utility_metric") for r in points if r.get("utility_metric")), None)
    lower_better = metric is not None and any(w in metric for w in ("perplexity", "loss"))
    panels = (
        ("best_auc", "best MIA AUC (leakage; lower is better)"),
        (
            "utility",
            f"{metric or 'utility'} ({'lower' if lower_better else 'higher'} is better)",
        ),
    )
    # Each metric: a log ε axis for the private runs and, beside it, a narrow panel of its own
    # for the runs without DP (ε = ∞ is not a number on the axis), sharing the y axis.
    for subfig, (column, label) in zip(fig.subfigures(1, 2), panels, strict=True):
        parts = (["finite"] if finite else []) + (["inf"] if any_inf else [])
        ratios = [4.5 if part == "finite" else 1.0 for part in parts]
        axes = subfig.subplots(1, len(parts), sharey=True, width_ratios=ratios, squeeze=False)[0]
        for ax, part in zip(axes, parts, strict=True):
            for r in points:
                y = as_float(r.get(column))
                e = _number(r["epsilon"], "epsilon")
                if y is None or math.isnan(y) or math.isfinite(e) != (part == "finite"):
                    continue
                dp = math.isfinite(e)
                x = e if dp else 0.0
                violation = r.get("audit_verdict") == "violation"
                ax.scatter(
                    [x],
                    [y],
                    s=42,
                    color=COLORS["target"] if dp else COLORS["baseline"],
                    marker="o" if dp else "s",
                    edgecolors="#b2182b" if violation else "none",
                    linewidths=2 if violation else 0,
                    zorder=3,
                )
                name = str(r.get("run")) + (" (audit violation)" if violation else "")
                if dp:
                    ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
                else:  # the panel is narrow: the name centred above the point, wrapped
                    ax.annotate(
                        _wrap(name, 14),
                        (x, y),
                        textcoords="offset points",
                        xytext=(0, 6),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
            ax.grid(True, linewidth=0.3, alpha=0.6)
            if part == "finite":
                ax.set_xscale("log")
                ax.set_xlim(left, right)
                ax.xaxis.set_major_locator(FixedLocator(_eps_ticks(finite, left, right)))
                ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xlabel("claimed ε (log scale)")
            else:
                ax.set_xlim(-1, 1)
                ax.set_xticks([0.0], [NO_DP_LABEL])
                ax.xaxis.set_minor_locator(NullLocator())
                ax.set_facecolor("#f4f4f4")
                if finite:  # beside the private runs' panel, whose y axis it shares
                    ax.spines["left"].set_linestyle(":")
                    ax.tick_params(axis="y", left=False)
                else:
                    ax.set_xlabel("claimed ε")
        axes[0].set_ylabel(label.replace("_", " "))
    return fig


def tradeoff_plot(rows: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Privacy–leakage–utility scatter of several runs (``compare``).

    Left: best MIA AUC against claimed ε; right: utility against claimed ε. The
    ε axis is logarithmic with a tick at each run's ε (thinned so that labels do
    not collide). Non-private runs (ε = ∞) are not put on that axis: they sit in
    a narrow panel of their own beside it, labelled "no DP (ε = ∞)", on the same
    y axis.
    """
    with _rc():
        fig = _tradeoff_figure(rows)
        return None if fig is None else figure_png(fig)
