"""The report's figures on screen: labels that do not run into each other, ε = ∞ off the ε axis.

The figures are built (Agg) and drawn, and the bounding boxes of their text
labels are compared in pixels: no two tick labels of an axis may overlap, and
every label lies inside the figure.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from dpaudit.reports import plots  # noqa: E402

LONG_KINDS = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD_NUMBER",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SOCIAL_SECURITY_NUMBER",
    "US_DRIVER_LICENSE",
    "MEDICAL_LICENSE_NUMBER",
    "POSTAL_ADDRESS_WITH_HOUSE_NUMBER_AND_CITY",
)


def pii_report(kinds: tuple[str, ...] = LONG_KINDS) -> dict[str, Any]:
    """The part of a report that :func:`plots.pii_plot` reads: PII extraction rates per kind."""

    def model(epsilon: float | str, shift: int) -> dict[str, Any]:
        by_kind = {
            kind: {"extraction_rate": (i + shift) / 40, "extracted": i + shift, "truth": 40}
            for i, kind in enumerate(kinds)
        }
        return {"summary": {"epsilon": epsilon}, "pii": {"by_kind": by_kind}}

    return {"models": {"target": model(3.0, 0), "baseline": model("inf", 4)}}


def draw(fig: Any) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def all_axes(fig: Any) -> list[Any]:
    found = list(fig.get_axes())
    for sub in getattr(fig, "subfigs", []):
        found += [ax for ax in all_axes(sub) if ax not in found]
    return found


def shown(labels: list[Any]) -> list[Any]:
    return [t for t in labels if t.get_visible() and t.get_text().strip()]


def assert_apart(texts: list[Any], renderer: Any, what: str) -> None:
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for (a, box_a), (b, box_b) in combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"{what}: labels {a!r} and {b!r} overlap"


def assert_inside(texts: list[Any], fig: Any, renderer: Any) -> None:
    width, height = fig.bbox.width, fig.bbox.height
    for t in texts:
        box = t.get_window_extent(renderer)
        assert box.x0 >= -1 and box.y0 >= -1, f"label {t.get_text()!r} cut off (left/bottom)"
        assert box.x1 <= width + 1 and box.y1 <= height + 1, f"label {t.get_text()!r} cut off"


# -- PII ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, len(LONG_KINDS)])
def test_pii_plot_kind_labels_do_not_overlap(n):
    with plots._rc():
        fig = plots._pii_figure(pii_report(LONG_KINDS[:n]))
        renderer = draw(fig)
        (ax,) = all_axes(fig)
        ticks = shown(ax.get_xticklabels()) + shown(ax.get_yticklabels())
        labels = [t for t in ticks if t.get_text().replace("\n", "") in LONG_KINDS[:n]]
        assert len(labels) == n, "every kind is named once (wrapped, not cut)"
        assert_apart(labels, renderer, "PII kinds")
        assert_inside(labels, fig, renderer)
        # The value labels on the bars must not run into each other either.
        values = [t for t in ax.texts if t.get_text().endswith("%")]
        assert len(values) == 2 * n
        assert_apart(values, renderer, "bar values")


def test_pii_plot_grows_with_the_kinds():
    with plots._rc():
        few = plots._pii_figure(pii_report(LONG_KINDS[:3]))
        many = plots._pii_figure(pii_report(LONG_KINDS))
    assert many.get_figheight() > few.get_figheight() * 1.8
    assert plots.pii_plot(pii_report())[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.pii_plot({"models": {"target": {"summary": {}}}}) is None


# -- comparison --------------------------------------------------------------------------------


def run(name: str, epsilon: float | str, auc: float, utility: float) -> dict[str, Any]:
    return {
        "run": name,
        "epsilon": epsilon,
        "best_auc": auc,
        "utility": utility,
        "utility_metric": "eval_perplexity",
    }


SWEEP = [
    run("eps0.5", 0.5, 0.51, 60.0),
    run("eps1", 1.0, 0.52, 50.0),
    run("eps1.1", 1.1, 0.52, 49.0),
    run("eps1.25", 1.25, 0.53, 47.0),
    run("eps2", 2.0, 0.54, 40.0),
    run("eps3", 3.0, 0.55, 36.0),
    run("eps4", 4.0, 0.56, 33.0),
    run("eps6", 6.0, 0.57, 31.0),
    run("eps8", 8.0, 0.58, 30.0),
    run("eps16", 16.0, 0.6, 28.0),
    run("eps100", 100.0, 0.7, 25.0),
    run("baseline (no DP)", "inf", 0.93, 23.9),
]


def _log_axes(fig: Any) -> list[Any]:
    return [ax for ax in all_axes(fig) if ax.get_xscale() == "log"]


@pytest.mark.parametrize("rows", [SWEEP, SWEEP[-2:], [SWEEP[1], SWEEP[-1]]])
def test_tradeoff_plot_keeps_no_dp_off_the_epsilon_axis(rows):
    with plots._rc():
        fig = plots._tradeoff_figure(rows)
        renderer = draw(fig)
    finite = [r["epsilon"] for r in rows if math.isfinite(float(r["epsilon"]))]
    numeric = _log_axes(fig)
    assert len(numeric) == 2, "one log ε axis per panel (leakage, utility)"
    for ax in numeric:
        low, high = ax.get_xlim()
        assert math.isfinite(low) and math.isfinite(high)
        # Only the private runs are on the ε axis, each at its own ε.
        xs = sorted(float(x) for c in ax.collections for x, _ in c.get_offsets())
        assert xs == sorted(finite)
        assert high < 2.5 * max(finite), "no room left at the right end for an '∞' point"
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(math.isfinite(t) for t in ticks)
        labels = shown(ax.get_xticklabels())
        assert all("∞" not in t.get_text() for t in labels)
        assert_apart(labels, renderer, "ε ticks")
        assert_inside(labels, fig, renderer)
        assert 1 <= len(labels) <= 8, "a few ε ticks, not one per minor tick"
    # The run without DP sits in a panel of its own, labelled so, on a categorical axis.
    others = [ax for ax in all_axes(fig) if ax.get_xscale() != "log"]
    assert len(others) == 2
    for ax in others:
        texts = [t.get_text() for t in shown(ax.get_xticklabels())]
        assert texts == [plots.NO_DP_LABEL]
        assert "∞" in texts[0] and "no DP" in texts[0]
        assert sum(len(c.get_offsets()) for c in ax.collections) == 1
        assert ax.get_shared_y_axes().joined(ax, numeric[others.index(ax)])


def test_tradeoff_plot_private_only_and_no_dp_only():
    with plots._rc():
        private = plots._tradeoff_figure(SWEEP[:4])
        none = plots._tradeoff_figure([SWEEP[-1], run("other", float("inf"), 0.9, 24.0)])
        draw(private)
        draw(none)
    assert len(all_axes(private)) == 2 and len(_log_axes(private)) == 2
    assert not _log_axes(none)
    for ax in all_axes(none):
        assert [t.get_text() for t in shown(ax.get_xticklabels())] == [plots.NO_DP_LABEL]
    assert plots.tradeoff_plot([{"run": "x", "epsilon": None}]) is None
    assert plots.tradeoff_plot(SWEEP)[:8] == b"\x89PNG\r\n\x1a\n"
