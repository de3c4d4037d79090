"""The :class:`EpsilonLowerBound` value and the functions that produce it.

The maths lives in :mod:`dpaudit.audit.bounds` (Clopper-Pearson counts audit)
and :mod:`dpaudit.audit.one_run` (one-run audit); this module turns their
results into one immutable, serialisable record, the ``audit/bounds.json``
entry of a run:

- calculators from counts, for the CLI: :func:`bound_threshold`, :func:`bound_one_run`;
- auditors from canary scores and membership bits: :func:`audit_threshold`
  (held-out threshold selection), :func:`audit_threshold_grid` (Bonferroni
  over fixed thresholds), :func:`audit_one_run` (union bound over a fixed
  ``(k+, k-)`` grid, one estimator of :mod:`dpaudit.audit.estimators`) and
  :func:`audit_one_run_estimators` (the same guesses, every estimator).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import numpy as np

from dpaudit.audit.bounds import (
    check_confidence,
    check_count,
    check_delta,
    epsilon_lower_bound_counts,
    threshold_audit,
    threshold_grid_audit,
)
from dpaudit.audit.estimators import (
    DEFAULT_ESTIMATOR,
    GUARANTEES,
    estimator_names,
    get_estimator,
)
from dpaudit.audit.one_run import one_run_audit_grid
from dpaudit.errors import DpauditError

__all__ = [
    "ESTIMATOR_THRESHOLD",
    "METHOD_ONE_RUN",
    "METHOD_THRESHOLD",
    "EpsilonLowerBound",
    "audit_one_run",
    "audit_one_run_estimators",
    "audit_threshold",
    "audit_threshold_grid",
    "bound_one_run",
    "bound_threshold",
]

METHOD_THRESHOLD = "threshold"
METHOD_ONE_RUN = "one-run"
ESTIMATOR_THRESHOLD = "clopper-pearson"
"""The ``estimator`` of threshold-method bounds (not an :data:`ESTIMATORS` entry)."""


@dataclass(frozen=True)
class EpsilonLowerBound:
    """An empirical lower bound on epsilon at a given delta and confidence.

    If the audited training is (eps, ``delta``)-DP, ``epsilon > eps`` happens
    with probability at most ``1 - confidence``.

    Attributes:
        method: ``"threshold"`` (Clopper-Pearson counts; Jagielski et al. 2020,
            Nasr et al. 2021) or ``"one-run"`` (Steinke, Nasr, Jagielski 2023).
        epsilon: the bound, finite and ``>= 0``.
        delta: delta of the DP claim tested, in ``[0, 1)``.
        confidence: ``1 - beta``, in ``(0, 1)``, for the reported value as a whole
            (after any correction for choosing among several guess rules).
        n_canaries: canaries audited (for the threshold method with a held-out
            split, only those counted).
        n_guesses: membership guesses made (abstentions excluded).
        n_correct: correct guesses.
        threshold_selection: how the guessing rule was chosen, e.g. ``"fixed"``,
            ``"heldout(...)"``, ``"bonferroni(...)"`` or ``"union-bound(...)"``.
        estimator: for ``one-run``, the :data:`~dpaudit.audit.estimators.ESTIMATORS`
            name that turned the counts into ``epsilon`` (default ``"steinke"``);
            ``"clopper-pearson"`` for ``threshold``.
        guarantee: what ``epsilon`` promises, a key of
            :data:`~dpaudit.audit.estimators.GUARANTEES`: ``"lower-bound"`` (every
            (eps, delta)-DP mechanism; the default), ``"gdp-lower-bound"`` (only
            if the trade-off curve is Gaussian) or ``"estimate"``.
        ceiling: the largest ``epsilon`` the same audit could have given (every
            guess right, same grid, delta and confidence); ``None`` when unknown
            (records written before it existed, the threshold method).
    """

    method: str
    epsilon: float
    delta: float
    confidence: float
    n_canaries: int
    n_guesses: int
    n_correct: int
    threshold_selection: str
    estimator: str = DEFAULT_ESTIMATOR
    guarantee: str = "lower-bound"
    ceiling: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise DpauditError(f"method must be a non-empty string, got {self.method!r}")
        if (
            isinstance(self.epsilon, bool)
            or not isinstance(self.epsilon, numbers.Real)
            or not 0.0 <= float(self.epsilon) < math.inf
        ):
            raise DpauditError(f"epsilon must be finite and >= 0, got {self.epsilon!r}")
        check_delta(self.delta)
        check_confidence(self.confidence)
        n = check_count("n_canaries", self.n_canaries)
        r = check_count("n_guesses", self.n_guesses)
        v = check_count("n_correct", self.n_correct)
        if not v <= r <= n:
            raise DpauditError(f"need n_correct <= n_guesses <= n_canaries, got {v}, {r}, {n}")
        if not isinstance(self.threshold_selection, str) or not self.threshold_selection:
            raise DpauditError("threshold_selection must be a non-empty string")
        if not isinstance(self.estimator, str) or not self.estimator:
            raise DpauditError(f"estimator must be a non-empty string, got {self.estimator!r}")
        if self.guarantee not in GUARANTEES:
            raise DpauditError(
                f"guarantee must be one of {', '.join(GUARANTEES)}, got {self.guarantee!r}"
            )
        if self.ceiling is not None:
            if (
                isinstance(self.ceiling, bool)
                or not isinstance(self.ceiling, numbers.Real)
                or not 0.0 <= float(self.ceiling) < math.inf
            ):
                raise DpauditError(f"ceiling must be finite and >= 0 or None, got {self.ceiling!r}")
            object.__setattr__(self, "ceiling", float(self.ceiling))
        # Store plain Python numbers so that to_dict() is JSON-ready.
        for name, cast in (
            ("epsilon", float),
            ("delta", float),
            ("confidence", float),
            ("n_canaries", int),
            ("n_guesses", int),
            ("n_correct", int),
        ):
            object.__setattr__(self, name, cast(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (plain str, float and int values)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpsilonLowerBound:
        """Rebuild from :meth:`to_dict` output; unknown keys, or missing keys without a default, are errors.

        A record written before estimators existed (``estimator``, ``guarantee``
        absent or ``None``, as ``audit/bounds.json`` stores them) gets the
        defaults: ``"steinke"`` (``"clopper-pearson"`` for the threshold method)
        and ``"lower-bound"``.
        """
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        unknown = sorted(set(data) - names)
        missing = sorted(required - set(data))
        if unknown or missing:
            raise DpauditError(
                f"bad EpsilonLowerBound record: unknown keys {unknown}, missing keys {missing}"
            )
        values = {k: data[k] for k in names if k in data}
        for key in ("estimator", "guarantee"):
            if values.get(key, "") is None:
                del values[key]
        if "estimator" not in values and values.get("method") == METHOD_THRESHOLD:
            values["estimator"] = ESTIMATOR_THRESHOLD
        return cls(**values)


# ----------------------------------------------------------------------------- calculators
def bound_threshold(
    tp: int,
    fp: int,
    tn: int,
    fn: int,
    *,
    delta: float,
    confidence: float,
    threshold_selection: str = "fixed",
) -> EpsilonLowerBound:
    """Counts audit from a confusion matrix (see :func:`~dpaudit.audit.bounds.epsilon_lower_bound_counts`).

    The rule that produced the counts must have been fixed without looking at
    them; ``threshold_selection`` records how.
    """
    res = epsilon_lower_bound_counts(tp, fp, tn, fn, delta=delta, confidence=confidence)
    n = res.tp + res.fp + res.tn + res.fn
    return EpsilonLowerBound(
        method=METHOD_THRESHOLD,
        epsilon=res.epsilon,
        delta=res.delta,
        confidence=res.confidence,
        n_canaries=n,
        n_guesses=n,
        n_correct=res.tp + res.tn,
        threshold_selection=threshold_selection,
        estimator=ESTIMATOR_THRESHOLD,
    )


def bound_one_run(
    *,
    canaries: int,
    guesses: int,
    correct: int,
    delta: float,
    confidence: float,
    threshold_selection: str = "fixed",
    estimator: str = DEFAULT_ESTIMATOR,
) -> EpsilonLowerBound:
    """One-run audit from counts: ``canaries`` m, ``guesses`` r, ``correct`` v.

    ``estimator`` names an :data:`~dpaudit.audit.estimators.ESTIMATORS` entry
    (default ``"steinke"``: :func:`~dpaudit.audit.one_run.one_run_epsilon_lower_bound`);
    ``ceiling`` is its epsilon at ``v = r``. The number of guesses must have
    been fixed without looking at the inclusion coins.

    Raises:
        DpauditError: counts out of range, an unknown estimator, or one not
            defined at these arguments (``fdp-gdp`` at delta = 0).
    """
    est = get_estimator(estimator)
    m = check_count("canaries", canaries)
    r = check_count("guesses", guesses)
    v = check_count("correct", correct)
    if r > m:
        raise DpauditError(f"guesses must be at most canaries, got guesses={r}, canaries={m}")
    if v > r:
        raise DpauditError(f"correct must be at most guesses, got correct={v}, guesses={r}")
    delta, confidence = check_delta(delta), check_confidence(confidence)
    eps = est.epsilon(m=m, r=r, v=v, delta=delta, confidence=confidence)
    return EpsilonLowerBound(
        method=METHOD_ONE_RUN,
        epsilon=eps,
        delta=delta,
        confidence=confidence,
        n_canaries=m,
        n_guesses=r,
        n_correct=v,
        threshold_selection=threshold_selection,
        estimator=est.name,
        guarantee=est.guarantee,
        ceiling=est.ceiling(m=m, r=r, delta=delta, confidence=confidence),
    )


# ----------------------------------------------------------------------------- auditors
def _split_by_membership(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float)
    b = np.asarray(is_member)
    if s.ndim != 1 or b.shape != s.shape:
        raise DpauditError(
            f"scores and is_member must be 1-D of the same length, got {s.shape} and {b.shape}"
        )
    if b.dtype != bool:
        if not np.all(np.isin(b, (0, 1))):
            raise DpauditError("is_member must hold booleans (or 0/1)")
        b = b.astype(bool)
    return s[b], s[~b]


def audit_threshold(
    scores: Sequence[float] | np.ndarray,
    is_member: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    confidence: float,
    heldout_fraction: float = 0.5,
    seed: int,
) -> EpsilonLowerBound:
    """Threshold audit of canary scores, threshold chosen on a held-out split.

    See :func:`~dpaudit.audit.bounds.threshold_audit`; ``n_canaries`` counts
    only the canaries the bound is computed on.
    """
    member, nonmember = _split_by_membership(scores, is_member)
    res = threshold_audit(
        member,
        nonmember,
        delta=delta,
        confidence=confidence,
        heldout_fraction=heldout_fraction,
        seed=seed,
    )
    selection = (
        f"heldout(fraction={res.heldout_fraction:g}, seed={res.seed}, "
        f"selected_on={res.n_selection_members + res.n_selection_nonmembers}, "
        f"threshold={res.threshold:.10g})"
    )
    b = res.bound
    return bound_threshold(
        b.tp, b.fp, b.tn, b.fn, delta=delta, confidence=confidence, threshold_selection=selection
    )


def audit_threshold_grid(
    scores: Sequence[float] | np.ndarray,
    is_member: Sequence[bool] | np.ndarray,
    *,
    thresholds: Sequence[float],
    delta: float,
    confidence: float,
) -> EpsilonLowerBound:
    """Threshold audit over a grid fixed in advance, Bonferroni-corrected.

    See :func:`~dpaudit.audit.bounds.threshold_grid_audit`; ``confidence`` is
    the overall level of the reported (best) bound.
    """
    member, nonmember = _split_by_membership(scores, is_member)
    res = threshold_grid_audit(
        member, nonmember, thresholds=thresholds, delta=delta, confidence=confidence
    )
    b = res.bound
    n = b.tp + b.fp + b.tn + b.fn
    return EpsilonLowerBound(
        method=METHOD_THRESHOLD,
        epsilon=b.epsilon,
        delta=b.delta,
        confidence=res.confidence,
        n_canaries=n,
        n_guesses=n,
        n_correct=b.tp + b.tn,
        threshold_selection=(
            f"bonferroni(thresholds={len(res.thresholds)}, threshold={res.threshold:.10g})"
        ),
        estimator=ESTIMATOR_THRESHOLD,
    )


def audit_one_run(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    confidence: float,
    grid: Sequence[tuple[int, int] | int] | None = None,
    estimator: str = DEFAULT_ESTIMATOR,
) -> EpsilonLowerBound:
    """One-run audit of canary scores: best of a fixed ``(k+, k-)`` grid, union-bounded.

    See :func:`~dpaudit.audit.one_run.one_run_audit_grid` (a one-point grid is a
    plain :func:`~dpaudit.audit.one_run.one_run_audit`). ``confidence`` is the
    overall level of the reported bound; ``estimator`` an
    :data:`~dpaudit.audit.estimators.ESTIMATORS` name, whose ``guarantee`` the
    record carries; ``ceiling`` is the grid's epsilon had every guess been right.

    A score-based estimator (``inputs = "scores"``, e.g. ``gauss``) uses every
    canary's score instead of a grid of guesses: ``n_guesses`` is then m, and
    ``n_correct`` the canaries on their side of the midpoint between the two
    sides' mean scores; it has no ceiling (``None``).

    Raises:
        DpauditError: bad scores, coins or grid, an unknown estimator, or one
            not defined at these arguments (``fdp-gdp`` at delta = 0).
    """
    est = get_estimator(estimator)
    if est.inputs == "scores":
        return _score_bound(est, scores, included, delta=delta, confidence=confidence)
    res = one_run_audit_grid(
        scores, included, grid=grid, delta=delta, confidence=confidence, estimator=est.name
    )
    best = res.best
    if len(res.results) == 1:
        selection = f"fixed(k_plus={best.k_plus}, k_minus={best.k_minus})"
    else:
        selection = (
            f"union-bound(grid={len(res.results)}, k_plus={best.k_plus}, k_minus={best.k_minus})"
        )
    return EpsilonLowerBound(
        method=METHOD_ONE_RUN,
        epsilon=best.epsilon,
        delta=best.delta,
        confidence=res.confidence,
        n_canaries=best.m,
        n_guesses=best.r,
        n_correct=best.v,
        threshold_selection=selection,
        estimator=est.name,
        guarantee=est.guarantee,
        ceiling=res.ceiling,
    )


def _score_bound(
    est: Any, scores: Any, included: Any, *, delta: float, confidence: float
) -> EpsilonLowerBound:
    """A score-based estimator's bound, with the midpoint classifier's counts for the record."""
    epsilon = est.epsilon_from_scores(scores, included, delta=delta, confidence=confidence)
    s = np.asarray(scores, dtype=float)
    b = np.asarray(included).astype(bool)
    mid = 0.5 * (s[b].mean() + s[~b].mean())
    return EpsilonLowerBound(
        method=METHOD_ONE_RUN,
        epsilon=epsilon,
        delta=delta,
        confidence=confidence,
        n_canaries=int(s.size),
        n_guesses=int(s.size),
        n_correct=int(((s > mid) == b).sum()),
        threshold_selection="scores(gaussian pair)",
        estimator=est.name,
        guarantee=est.guarantee,
        ceiling=None,
    )


def audit_one_run_estimators(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    confidence: float,
    grid: Sequence[tuple[int, int] | int] | None = None,
    estimators: Sequence[str] | None = None,
) -> dict[str, EpsilonLowerBound]:
    """:func:`audit_one_run` once per estimator: same guesses, same grid, side by side.

    Each estimator gets its own union bound over ``grid`` (so its best grid
    point may differ); the guesses at each grid point are the same for all.

    Args:
        scores, included, delta, confidence, grid: as for :func:`audit_one_run`.
        estimators: :data:`~dpaudit.audit.estimators.ESTIMATORS` names, in the
            order wanted; ``None`` or empty = every registered counts estimator
            (score-based ones, e.g. ``gauss``, only when named).

    Returns:
        name → its :class:`EpsilonLowerBound`, in the order given.

    Raises:
        DpauditError: as :func:`audit_one_run`; an unknown or repeated name.
    """
    names = tuple(estimators) if estimators else estimator_names(scores=False)
    if len(set(names)) != len(names):
        raise DpauditError(f"estimators contains a name twice: {list(names)}")
    for name in names:
        get_estimator(name)  # unknown names fail before any work
    return {
        name: audit_one_run(
            scores, included, delta=delta, confidence=confidence, grid=grid, estimator=name
        )
        for name in names
    }
