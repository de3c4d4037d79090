"""ROC statistics of membership scores, with stratified-bootstrap intervals.

Pure functions over ``(scores, is_member)`` with *higher score = more likely a
member*; :func:`compute_metrics` packages them into an
:class:`~dpaudit.attacks.scores.AttackMetrics`. This module holds the package's
one AUC (:func:`mann_whitney_auc`, vectorised over resamples) and its one
bootstrap (:func:`bootstrap_samples`); the split check
(:mod:`dpaudit.attacks.blind`) uses both. scikit-learn computes the ROC curve;
the low-FPR reading follows Carlini et al. 2022
("Membership Inference Attacks From First Principles", IEEE S&P, Sec. III:
report TPR at a fixed low FPR on a log-scale ROC), with every ROC point kept
(``drop_intermediate=False``) so that no operating point is lost between two
retained vertices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from dpaudit.attacks.scores import AttackMetrics, AttackScores
from dpaudit.errors import DpauditError

__all__ = [
    "DEFAULT_FPRS",
    "auc",
    "balanced_accuracy",
    "bootstrap_ci",
    "bootstrap_samples",
    "compute_metrics",
    "mann_whitney_auc",
    "percentile_interval",
    "roc_curve_points",
    "tpr_at_fpr",
]

DEFAULT_FPRS: tuple[float, ...] = (0.001, 0.01, 0.1)


def _validate(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(is_member)
    if s.ndim != 1 or m.ndim != 1 or len(s) != len(m):
        raise DpauditError(
            f"scores and is_member must be 1-D of equal length, got shapes {s.shape} and {m.shape}"
        )
    if m.dtype != bool:
        if m.size and not np.isin(m, (0, 1)).all():
            raise DpauditError("is_member must be booleans (or 0/1)")
        m = m.astype(bool)
    if not np.isfinite(s).all():
        raise DpauditError("scores must be finite")
    if m.all() or not m.any():
        raise DpauditError(
            f"ROC statistics need members and non-members; got {int(m.sum())} members "
            f"and {int((~m).sum())} non-members"
        )
    return s, m


def roc_curve_points(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every point of the empirical ROC curve.

    An example is called a member when its score is ``>= threshold``. Unlike
    scikit-learn's default, collinear intermediate points are kept
    (``drop_intermediate=False``), so each distinct score contributes a point.

    Args:
        scores: one score per example, higher = more likely a member.
        is_member: ground-truth membership.

    Returns:
        ``(fpr, tpr, thresholds)``, non-decreasing in FPR and TPR, starting at
        ``(0, 0)`` (threshold ``+inf``) and ending at ``(1, 1)``.

    Raises:
        DpauditError: mismatched or non-finite input, or a single class.
    """
    s, m = _validate(scores, is_member)
    fpr, tpr, thresholds = roc_curve(m, s, drop_intermediate=False)
    return fpr, tpr, thresholds


def mann_whitney_auc(scores: Any, is_member: Any) -> np.ndarray:
    """AUC as the Mann-Whitney statistic, vectorised over leading axes.

    ``AUC = (R_1 - n1 (n1 + 1) / 2) / (n1 n0)`` with ``R_1`` the sum of the
    members' mid-ranks among all scores of a row (ties count ½): the
    probability that a random member outscores a random non-member, plus half
    the probability of a tie (Hanley & McNeil 1982, "The meaning and use of the
    area under a receiver operating characteristic (ROC) curve", Radiology
    143(1), Sec. "AUC and the Wilcoxon statistic"). One ``rankdata`` call
    scores a whole batch of bootstrap resamples.

    Args:
        scores: shape ``(..., n)``, higher = more likely a member.
        is_member: booleans broadcastable to ``scores``; each row needs both classes.

    Returns:
        float64 array of shape ``(...)`` (0-d for 1-D input). Inputs are not
        validated (see :func:`auc`); a row with one class gives nan.
    """
    s = np.asarray(scores, dtype=np.float64)
    m = np.broadcast_to(np.asarray(is_member, dtype=bool), s.shape)
    ranks = rankdata(s, axis=-1)
    n1 = m.sum(axis=-1)
    n0 = m.shape[-1] - n1
    u = np.where(m, ranks, 0.0).sum(axis=-1) - n1 * (n1 + 1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(u / (n1 * n0), dtype=np.float64)


def auc(scores: Any, is_member: Any) -> float:
    """Area under the ROC curve of validated 1-D input (:func:`mann_whitney_auc`).

    Equal to scikit-learn's ``roc_auc_score`` (tested).

    Raises:
        DpauditError: mismatched or non-finite input, or a single class.
    """
    s, m = _validate(scores, is_member)
    return float(mann_whitney_auc(s, m))


def tpr_at_fpr(fpr: Any, tpr: Any, target: float) -> float:
    """Largest TPR over all ROC points whose FPR is at most ``target``.

    This is the best true-positive rate any threshold reaches without exceeding
    the false-positive budget (docs/formulas.md#tpr-at-fpr; Carlini et al. 2022,
    Sec. III). It is *not* the TPR of the first point above the target, nor an
    interpolation between points. Pass the full curve of
    :func:`roc_curve_points`; the point ``(0, 0)`` guarantees a result >= 0.

    With ``n0`` non-members the attainable FPRs are multiples of ``1/n0``: for
    ``target < 1/n0`` this is the TPR at zero false positives.

    Raises:
        DpauditError: ``target`` outside [0, 1] or mismatched arrays.
    """
    if not 0.0 <= target <= 1.0:
        raise DpauditError(f"FPR target must lie in [0, 1], got {target}")
    f = np.asarray(fpr, dtype=np.float64)
    t = np.asarray(tpr, dtype=np.float64)
    if f.shape != t.shape or f.ndim != 1:
        raise DpauditError(f"fpr and tpr must be 1-D of equal length, got {f.shape} and {t.shape}")
    ok = f <= target
    return float(t[ok].max()) if ok.any() else 0.0


def _best_balanced_accuracy(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.max((tpr + 1.0 - fpr) / 2.0))


def balanced_accuracy(scores: Any, is_member: Any) -> float:
    """Best balanced accuracy over all thresholds: ``max_t (TPR_t + TNR_t) / 2``.

    Balanced accuracy as in Brodersen et al. 2010 ("The balanced accuracy and
    its posterior distribution", ICPR, Sec. 2), maximised over every threshold
    of the ROC curve (equivalently ``1/2 + max_t (TPR_t - FPR_t) / 2``, the
    Youden-index point). The threshold is chosen on the very scores it is
    evaluated on, so this is an **optimistic, in-sample** statistic: at least
    0.5 even for a useless attack, and biased upwards on small samples. Use it
    to compare attacks, never as an unbiased accuracy estimate or for a
    privacy bound (which needs a threshold fixed before counting).
    """
    fpr, tpr, _ = roc_curve_points(scores, is_member)
    return _best_balanced_accuracy(fpr, tpr)


def _resampler(is_member: np.ndarray, seed: int) -> Callable[[], np.ndarray]:
    members = np.flatnonzero(is_member)
    nonmembers = np.flatnonzero(~is_member)
    rng = np.random.default_rng(seed)

    def draw() -> np.ndarray:
        return np.concatenate(
            [
                members[rng.integers(0, len(members), len(members))],
                nonmembers[rng.integers(0, len(nonmembers), len(nonmembers))],
            ]
        )

    return draw


_BATCH = 50  # resamples per call of a vectorised statistic (bounds memory at 50 x n)


def bootstrap_samples(
    fn: Callable[[np.ndarray, np.ndarray], Any],
    scores: Any,
    is_member: Any,
    *,
    n: int = 200,
    seed: int = 0,
    vectorized: bool = False,
) -> np.ndarray:
    """Statistic ``fn(scores, is_member)`` on ``n`` stratified bootstrap resamples.

    Members and non-members are resampled with replacement *separately*, each
    to its own size (stratified bootstrap; Efron & Tibshirani 1993, "An
    Introduction to the Bootstrap", Sec. 8.3, the two-sample problem), so each
    resample keeps the class counts and every ROC statistic stays defined.
    This is the package's one bootstrap. It is kept rather than
    ``scipy.stats.bootstrap`` (whose ``paired=False`` percentile method does
    the same resampling) because its draws are fixed here: a seed gives the
    same interval whatever the SciPy version, and resumed runs compare equal.

    Args:
        fn: statistic; returns a float or a 1-D array (several statistics
            computed on the same resamples). With ``vectorized=True`` it gets a
            batch: scores and is_member of shape ``(b, len(scores))``, one
            resample per row, and returns shape ``(b,)`` or ``(b, k)``
            (e.g. :func:`mann_whitney_auc`).
        scores: one score per example.
        is_member: ground-truth membership.
        n: number of resamples.
        seed: seed of ``numpy.random.default_rng``; same seed, same output,
            vectorised or not.
        vectorized: call ``fn`` on batches of up to 50 resamples.

    Returns:
        Array of shape ``(n,)`` or ``(n, k)``.

    Raises:
        DpauditError: ``n < 1``, or invalid input (see :func:`auc`).
    """
    if n < 1:
        raise DpauditError(f"bootstrap needs n >= 1 resamples, got {n}")
    s, m = _validate(scores, is_member)
    draw = _resampler(m, seed)
    if vectorized:
        parts = []
        for lo in range(0, n, _BATCH):
            idx = np.stack([draw() for _ in range(min(_BATCH, n - lo))])
            parts.append(np.asarray(fn(s[idx], m[idx]), dtype=np.float64))
        return np.concatenate(parts)
    out = []
    for _ in range(n):
        idx = draw()
        out.append(np.asarray(fn(s[idx], m[idx]), dtype=np.float64))
    return np.stack(out)


def percentile_interval(samples: Any, level: float = 0.95) -> tuple[Any, Any]:
    """Equal-tailed percentile interval ``(q_{(1-level)/2}, q_{(1+level)/2})`` along axis 0.

    Efron & Tibshirani 1993, Ch. 13 (the percentile interval). A percentile
    interval need not contain the point estimate when the bootstrap
    distribution is skewed or discrete (e.g. TPR at an FPR near ``1/n0``).
    """
    if not 0.0 < level < 1.0:
        raise DpauditError(f"confidence level must lie in (0, 1), got {level}")
    q = np.percentile(
        np.asarray(samples, dtype=np.float64), [50 * (1 - level), 50 * (1 + level)], axis=0
    )
    return q[0], q[1]


def bootstrap_ci(
    fn: Callable[[np.ndarray, np.ndarray], Any],
    scores: Any,
    is_member: Any,
    n: int = 200,
    seed: int = 0,
    level: float = 0.95,
    *,
    vectorized: bool = False,
) -> tuple[float, float]:
    """Stratified-bootstrap percentile interval of a scalar statistic.

    See :func:`bootstrap_samples` and :func:`percentile_interval`.
    Deterministic under ``seed``.
    """
    samples = bootstrap_samples(fn, scores, is_member, n=n, seed=seed, vectorized=vectorized)
    lo, hi = percentile_interval(samples, level)
    return float(lo), float(hi)


def _statistics(fprs: Sequence[float]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``[auc, balanced accuracy, tpr@fprs...]`` from one ROC curve."""

    def stats(s: np.ndarray, m: np.ndarray) -> np.ndarray:
        fpr, tpr, _ = roc_curve(m, s, drop_intermediate=False)
        return np.array(
            [
                float(mann_whitney_auc(s, m)),
                _best_balanced_accuracy(fpr, tpr),
                *(tpr_at_fpr(fpr, tpr, f) for f in fprs),
            ]
        )

    return stats


def compute_metrics(
    scores: AttackScores,
    fprs: Sequence[float] = DEFAULT_FPRS,
    bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> AttackMetrics:
    """All ROC statistics of an attack, with stratified-bootstrap intervals.

    Args:
        scores: the attack's output.
        fprs: FPR budgets for :func:`tpr_at_fpr`.
        bootstrap: number of resamples; 0 skips the intervals (``(nan, nan)``).
        seed: bootstrap seed.
        level: interval coverage.

    Raises:
        DpauditError: a single class, or invalid ``fprs`` / ``level``.
    """
    fprs = tuple(float(f) for f in fprs)
    for f in fprs:
        if not 0.0 <= f <= 1.0:
            raise DpauditError(f"FPR target must lie in [0, 1], got {f}")
    if bootstrap < 0:
        raise DpauditError(f"bootstrap must be >= 0, got {bootstrap}")
    s, m = _validate(scores.scores, scores.is_member)
    fpr, tpr, _ = roc_curve(m, s, drop_intermediate=False)
    stats = _statistics(fprs)
    point = stats(s, m)
    if bootstrap:
        lo, hi = percentile_interval(bootstrap_samples(stats, s, m, n=bootstrap, seed=seed), level)
    else:
        lo = hi = np.full(len(point), np.nan)
    ci = [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]
    return AttackMetrics(
        auc=float(point[0]),
        auc_ci=ci[0],
        tpr_at_fpr={f: (float(point[2 + i]), ci[2 + i]) for i, f in enumerate(fprs)},
        balanced_accuracy=float(point[1]),
        balanced_accuracy_ci=ci[1],
        n_member=int(m.sum()),
        n_nonmember=int((~m).sum()),
        roc={"fpr": fpr, "tpr": tpr},
        ci_level=level,
        n_bootstrap=bootstrap,
        seed=seed,
    )
