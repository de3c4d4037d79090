"""Empirical epsilon lower bounds from membership guesses: Clopper-Pearson counts.

Pure functions; :mod:`dpaudit.audit.lower_bound` wraps them into
:class:`~dpaudit.audit.lower_bound.EpsilonLowerBound` values, and
:mod:`dpaudit.audit.one_run` holds the one-run audit.

The maths
---------
Kairouz, Oh, Viswanath 2015 ("The Composition Theorem for Differential
Privacy", the hypothesis-testing characterisation of (epsilon, delta)-DP, their
Theorem 2.1, after Wasserman and Zhou 2010): every membership test on an
(epsilon, delta)-DP mechanism has

    FPR + e^eps * FNR >= 1 - delta   and   e^eps * FPR + FNR >= 1 - delta,

hence ``eps >= max(log((1-delta-FNR)/FPR), log((1-delta-FPR)/FNR))``.

Jagielski, Ullman, Oprea 2020 ("Auditing Differentially Private Machine
Learning: How Private is Private SGD?") and Nasr, Song, Thakurta, Papernot,
Carlini 2021 ("Adversary Instantiation: Lower Bounds for Differentially Private
Machine Learning") turn this into a high-confidence bound by replacing FPR and
FNR with Clopper-Pearson *upper* confidence bounds (Clopper and Pearson 1934).
With each upper bound at level ``beta/2`` both hold together with probability
at least ``1 - beta`` (union bound); on that event the right-hand side only
decreases (it is monotone decreasing in FPR and FNR), so the returned epsilon
exceeds the true epsilon with probability at most ``beta``.

Choosing the threshold
----------------------
The threshold that turns scores into guesses must not be chosen on the scores
that are counted, or the confidence statement is void. Two valid ways:

- :func:`threshold_audit`: split the canaries at random (stratified, seeded),
  choose the threshold on the held-out part, count on the rest only.
- :func:`threshold_grid_audit`: a grid of thresholds fixed before the scores are
  seen; every threshold is evaluated at confidence ``1 - beta/|grid|``
  (Bonferroni), so the best of them holds at ``1 - beta``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from dpaudit.errors import DpauditError

__all__ = [
    "CountsBound",
    "ThresholdAuditResult",
    "ThresholdGridResult",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "epsilon_lower_bound_counts",
    "heldout_split",
    "threshold_audit",
    "threshold_grid_audit",
]


# ----------------------------------------------------------------------------- validation
def check_count(name: str, value: object) -> int:
    """Return ``value`` as an ``int`` if it is a non-negative integer (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DpauditError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise DpauditError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_delta(delta: object) -> float:
    """Return ``delta`` as a float in ``[0, 1)``."""
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real):
        raise DpauditError(f"delta must be a number in [0, 1), got {delta!r}")
    if not 0.0 <= float(delta) < 1.0:
        raise DpauditError(f"delta must be in [0, 1), got {delta!r}")
    return float(delta)


def check_confidence(confidence: object) -> float:
    """Return ``confidence`` as a float in ``(0, 1)``."""
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real):
        raise DpauditError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise DpauditError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def check_scores(name: str, scores: object, *, min_size: int = 1) -> np.ndarray:
    """Return ``scores`` as a finite 1-D float array with at least ``min_size`` entries."""
    arr = np.asarray(scores, dtype=float)
    if arr.ndim != 1:
        raise DpauditError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size < min_size:
        raise DpauditError(f"{name} needs at least {min_size} scores, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise DpauditError(f"{name} contains NaN or infinite scores")
    return arr


def check_included(included: object, m: int) -> np.ndarray:
    """Return the canaries' coins as a boolean array of length ``m`` (booleans or 0/1 accepted)."""
    arr = np.asarray(included)
    if arr.ndim != 1 or arr.size != m:
        raise DpauditError(f"included must be one flag per canary ({m}), got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.all(np.isin(arr, (0, 1))):
            raise DpauditError("included must hold booleans (or 0/1)")
        arr = arr.astype(bool)
    return arr


# ----------------------------------------------------------------------------- Clopper-Pearson
def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper confidence bound on a binomial proportion.

    ``BetaInv(1 - alpha; k + 1, n - k)``, and 1 when ``k = n`` (Clopper and
    Pearson 1934): with probability at least ``1 - alpha`` over ``k ~ Bin(n, p)``,
    ``p <= clopper_pearson_upper(k, n, alpha)``. For ``k = 0`` it is
    ``1 - alpha**(1/n)``. With ``n = 0`` nothing is known and it is 1.

    Args:
        k: successes, ``0 <= k <= n``.
        n: trials.
        alpha: one-sided error probability, in ``(0, 1)``.
    """
    k, n = check_count("k", k), check_count("n", n)
    if k > n:
        raise DpauditError(f"k must be at most n, got k={k}, n={n}")
    _check_alpha(alpha)
    if k == n:
        return 1.0
    return float(stats.beta.ppf(1.0 - alpha, k + 1, n - k))


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower confidence bound: ``BetaInv(alpha; k, n - k + 1)``, 0 when ``k = 0``.

    With probability at least ``1 - alpha``, ``p >= clopper_pearson_lower(k, n, alpha)``.
    """
    k, n = check_count("k", k), check_count("n", n)
    if k > n:
        raise DpauditError(f"k must be at most n, got k={k}, n={n}")
    _check_alpha(alpha)
    if k == 0:
        return 0.0
    return float(stats.beta.ppf(alpha, k, n - k + 1))


def _check_alpha(alpha: object) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < float(alpha) < 1:
        raise DpauditError(f"alpha must be in (0, 1), got {alpha!r}")


def _cp_upper_array(k: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    """Vectorised :func:`clopper_pearson_upper` (no validation)."""
    full = k >= n
    b = np.where(full, 1, n - k)  # placeholder shape parameter where k = n
    upper = stats.beta.ppf(1.0 - alpha, k + 1, b)
    return np.where(full, 1.0, upper)


def _epsilon_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """``max(log((1-d-FNR)/FPR), log((1-d-FPR)/FNR), 0)``; a log of a non-positive number counts as 0."""
    fpr, fnr = np.asarray(fpr, dtype=float), np.asarray(fnr, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        num1, num2 = 1.0 - delta - fnr, 1.0 - delta - fpr
        e1 = np.where(num1 > 0, np.log(np.maximum(num1, 1e-300)) - np.log(fpr), 0.0)
        e2 = np.where(num2 > 0, np.log(np.maximum(num2, 1e-300)) - np.log(fnr), 0.0)
    return np.maximum(np.maximum(e1, e2), 0.0)


def _counts_epsilon_array(tp, fp, tn, fn, delta: float, confidence: float) -> np.ndarray:
    """Vectorised epsilon of :func:`epsilon_lower_bound_counts` (no validation)."""
    tp, fp, tn, fn = (np.asarray(x, dtype=np.int64) for x in (tp, fp, tn, fn))
    a = (1.0 - confidence) / 2.0
    fpr_hi = _cp_upper_array(fp, fp + tn, a)
    fnr_hi = _cp_upper_array(fn, fn + tp, a)
    return _epsilon_from_rates(fpr_hi, fnr_hi, delta)


# ----------------------------------------------------------------------------- counts bound
@dataclass(frozen=True)
class CountsBound:
    """The counts audit at one threshold and its intermediate rates.

    Attributes:
        epsilon: the lower bound, ``>= 0``.
        fpr_upper: Clopper-Pearson upper bound on the false-positive rate (level ``beta/2``).
        fnr_upper: Clopper-Pearson upper bound on the false-negative rate (level ``beta/2``).
        fpr: observed ``fp/(fp+tn)`` (NaN without non-members).
        fnr: observed ``fn/(fn+tp)`` (NaN without members).
        side: which inequality gave the bound: ``"tpr"`` (``(1-d-FNR)/FPR``),
            ``"tnr"`` (``(1-d-FPR)/FNR``) or ``"none"`` when it is 0.
        tp, fp, tn, fn: the counts.
        delta, confidence: as given.
    """

    epsilon: float
    fpr_upper: float
    fnr_upper: float
    fpr: float
    fnr: float
    side: str
    tp: int
    fp: int
    tn: int
    fn: int
    delta: float
    confidence: float


def epsilon_lower_bound_counts(
    tp: int, fp: int, tn: int, fn: int, *, delta: float, confidence: float
) -> CountsBound:
    """Epsilon lower bound from a confusion matrix (Jagielski et al. 2020; Nasr et al. 2021).

    ``FPR_hi = CP_upper(fp, fp+tn, beta/2)``, ``FNR_hi = CP_upper(fn, fn+tp, beta/2)``
    with ``beta = 1 - confidence``, and

        eps_lb = max(log((1-delta-FNR_hi)/FPR_hi), log((1-delta-FPR_hi)/FNR_hi), 0)

    (Kairouz, Oh, Viswanath 2015, Theorem 2.1). A log of a non-positive number
    counts as 0. If the mechanism is (eps, delta)-DP, ``eps_lb > eps`` with
    probability at most ``beta`` -- provided the rule that produced the counts
    was fixed independently of them.

    Args:
        tp, fp, tn, fn: true/false positives/negatives ("positive" = guessed member).
        delta: the delta of the DP claim being tested, in ``[0, 1)``.
        confidence: ``1 - beta``, in ``(0, 1)``.
    """
    tp, fp, tn, fn = (
        check_count(n, v) for n, v in (("tp", tp), ("fp", fp), ("tn", tn), ("fn", fn))
    )
    delta, confidence = check_delta(delta), check_confidence(confidence)
    a = (1.0 - confidence) / 2.0
    fpr_hi = clopper_pearson_upper(fp, fp + tn, a)
    fnr_hi = clopper_pearson_upper(fn, fn + tp, a)
    e1 = _log_ratio(1.0 - delta - fnr_hi, fpr_hi)
    e2 = _log_ratio(1.0 - delta - fpr_hi, fnr_hi)
    epsilon = max(e1, e2, 0.0)
    side = "none" if epsilon == 0.0 else ("tpr" if e1 >= e2 else "tnr")
    return CountsBound(
        epsilon=epsilon,
        fpr_upper=fpr_hi,
        fnr_upper=fnr_hi,
        fpr=fp / (fp + tn) if fp + tn else math.nan,
        fnr=fn / (fn + tp) if fn + tp else math.nan,
        side=side,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        delta=delta,
        confidence=confidence,
    )


def _log_ratio(num: float, den: float) -> float:
    """``log(num/den)``, or 0 when ``num <= 0`` (no evidence)."""
    if num <= 0.0:
        return 0.0
    return math.log(num) - math.log(den)


def _counts_at(member: np.ndarray, nonmember: np.ndarray, thresholds: np.ndarray):
    """(tp, fp, tn, fn) arrays for the rule "member iff score >= t", one entry per threshold."""
    m_sorted, n_sorted = np.sort(member), np.sort(nonmember)
    fn = np.searchsorted(m_sorted, thresholds, side="left")
    tn = np.searchsorted(n_sorted, thresholds, side="left")
    return member.size - fn, nonmember.size - tn, tn, fn


# ----------------------------------------------------------------------------- threshold audits
@dataclass(frozen=True)
class ThresholdAuditResult:
    """A threshold audit with the threshold chosen on a held-out split.

    Attributes:
        threshold: guesses "member" iff ``score >= threshold``.
        bound: the counts bound on the counted (not held-out) canaries.
        n_selection_members, n_selection_nonmembers: canaries used only to choose the threshold.
        heldout_fraction, seed: how the split was drawn.
    """

    threshold: float
    bound: CountsBound
    n_selection_members: int
    n_selection_nonmembers: int
    heldout_fraction: float
    seed: int

    @property
    def epsilon(self) -> float:
        """The lower bound."""
        return self.bound.epsilon


def threshold_audit(
    member_scores: Sequence[float] | np.ndarray,
    nonmember_scores: Sequence[float] | np.ndarray,
    *,
    delta: float,
    confidence: float,
    heldout_fraction: float = 0.5,
    seed: int,
) -> ThresholdAuditResult:
    """Counts audit with the threshold chosen on a random held-out part of the canaries.

    Members and non-members are each split at random (``seed``) into a
    selection part (``heldout_fraction`` of them, at least one) and a counted
    part (the rest, at least one). On the selection part every observed score is
    a candidate threshold; the one with the largest counts bound (at the same
    ``delta`` and ``confidence``) wins, ties and all-zero cases broken by the
    point estimate from the raw rates, then by the lowest threshold. The bound
    is then computed by :func:`epsilon_lower_bound_counts` on the counted part
    only, so the choice is independent of the counts and the confidence
    statement of Jagielski et al. 2020 holds as is.

    Args:
        member_scores: scores of canaries that were trained on (higher = member), at least 2.
        nonmember_scores: scores of canaries that were not, at least 2.
        delta: delta of the DP claim, in ``[0, 1)``.
        confidence: ``1 - beta``, in ``(0, 1)``.
        heldout_fraction: fraction of each group used only to choose the threshold.
        seed: seed of the split.
    """
    member = check_scores("member_scores", member_scores, min_size=2)
    nonmember = check_scores("nonmember_scores", nonmember_scores, min_size=2)
    delta, confidence = check_delta(delta), check_confidence(confidence)
    if (
        isinstance(heldout_fraction, bool)
        or not isinstance(heldout_fraction, numbers.Real)
        or not 0.0 < float(heldout_fraction) < 1.0
    ):
        raise DpauditError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
    seed = check_count("seed", seed)

    sel_mi, sel_ni = heldout_split(member.size, nonmember.size, heldout_fraction, seed)
    sel_m, cnt_m = member[sel_mi], np.delete(member, sel_mi)
    sel_n, cnt_n = nonmember[sel_ni], np.delete(nonmember, sel_ni)

    candidates = np.unique(np.concatenate([sel_m, sel_n]))
    tp, fp, tn, fn = _counts_at(sel_m, sel_n, candidates)
    bound = _counts_epsilon_array(tp, fp, tn, fn, delta, confidence)
    point = _epsilon_from_rates(fp / sel_n.size, fn / sel_m.size, delta)
    point = np.where(np.isfinite(point), point, np.finfo(float).max)
    # Largest bound; among those the largest point estimate; then the lowest threshold.
    best_bound = bound.max()
    best_point = point[bound == best_bound].max()
    idx = int(np.flatnonzero((bound == best_bound) & (point == best_point))[0])
    threshold = float(candidates[idx])

    ctp, cfp, ctn, cfn = (int(x[0]) for x in _counts_at(cnt_m, cnt_n, np.array([threshold])))
    counted = epsilon_lower_bound_counts(ctp, cfp, ctn, cfn, delta=delta, confidence=confidence)
    return ThresholdAuditResult(
        threshold=threshold,
        bound=counted,
        n_selection_members=int(sel_m.size),
        n_selection_nonmembers=int(sel_n.size),
        heldout_fraction=float(heldout_fraction),
        seed=seed,
    )


def heldout_split(
    n_members: int, n_nonmembers: int, heldout_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the members and non-members that :func:`threshold_audit` uses to choose the threshold.

    Each group is split on its own (stratified): ``round(fraction * n)`` of it,
    clipped to ``[1, n - 1]``, drawn without replacement by
    ``numpy.random.default_rng(seed)`` (members first). The rest is counted.
    Depends on the sizes and the seed only, never on the scores.
    """
    rng = np.random.default_rng(seed)
    out = []
    for n in (n_members, n_nonmembers):
        k = min(max(int(round(heldout_fraction * n)), 1), n - 1)
        out.append(np.sort(rng.permutation(n)[:k]))
    return out[0], out[1]


@dataclass(frozen=True)
class ThresholdGridResult:
    """A threshold audit over a fixed grid with a Bonferroni correction.

    Attributes:
        threshold: the grid threshold with the largest bound.
        bound: its counts bound, computed at ``per_threshold_confidence``.
        thresholds: the grid.
        epsilons: the bound at every grid threshold (same order).
        confidence: the overall confidence ``1 - beta``.
        per_threshold_confidence: ``1 - beta/|grid|``.
    """

    threshold: float
    bound: CountsBound
    thresholds: tuple[float, ...]
    epsilons: tuple[float, ...]
    confidence: float
    per_threshold_confidence: float

    @property
    def epsilon(self) -> float:
        """The lower bound, valid at ``confidence`` for the whole grid."""
        return self.bound.epsilon


def threshold_grid_audit(
    member_scores: Sequence[float] | np.ndarray,
    nonmember_scores: Sequence[float] | np.ndarray,
    *,
    thresholds: Sequence[float],
    delta: float,
    confidence: float,
) -> ThresholdGridResult:
    """Counts audit over a grid of thresholds fixed in advance (Bonferroni correction).

    Every threshold ``t`` (rule: member iff ``score >= t``) is audited with
    :func:`epsilon_lower_bound_counts` at confidence ``1 - beta/|grid|``; the
    largest bound is reported. By the union bound, the probability that any of
    them exceeds the true epsilon is at most ``beta``, so the maximum is a valid
    bound at confidence ``1 - beta``. The grid must not depend on the scores.

    Args:
        member_scores: scores of trained-on canaries (higher = member).
        nonmember_scores: scores of held-out canaries.
        thresholds: the grid, non-empty, finite.
        delta: delta of the DP claim, in ``[0, 1)``.
        confidence: overall ``1 - beta``, in ``(0, 1)``.
    """
    member = check_scores("member_scores", member_scores)
    nonmember = check_scores("nonmember_scores", nonmember_scores)
    grid = check_scores("thresholds", thresholds)
    delta, confidence = check_delta(delta), check_confidence(confidence)
    per = 1.0 - (1.0 - confidence) / grid.size
    tp, fp, tn, fn = _counts_at(member, nonmember, grid)
    eps = _counts_epsilon_array(tp, fp, tn, fn, delta, per)
    idx = int(np.argmax(eps))
    best = epsilon_lower_bound_counts(
        int(tp[idx]), int(fp[idx]), int(tn[idx]), int(fn[idx]), delta=delta, confidence=per
    )
    return ThresholdGridResult(
        threshold=float(grid[idx]),
        bound=best,
        thresholds=tuple(float(t) for t in grid),
        epsilons=tuple(float(e) for e in eps),
        confidence=confidence,
        per_threshold_confidence=per,
    )
