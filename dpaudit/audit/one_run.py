"""The one-run audit: an epsilon lower bound from a single training run.

Steinke, Nasr, Jagielski 2023, "Privacy Auditing with One (1) Training Run"
(NeurIPS 2023, arXiv:2305.08846).

Set-up (their Algorithm 1): ``m`` canaries, each included in training by an
independent fair coin ``S_i``. After training, the auditor guesses ``T_i`` in
{in, out, abstain} from the output alone (never from the coins); ``r`` guesses
are made and ``v`` of them are correct.

Main result, pure DP: if training is eps-DP, the number of correct guesses is
stochastically dominated by ``Binomial(r, p_eps)`` with
``p_eps = e^eps / (1 + e^eps)``, the accuracy of eps-DP randomized response:

    P[V >= v] <= P[Binomial(r, p_eps) >= v].

Approximate DP: if training is (eps, delta)-DP,

    P[V >= v] <= P[Binomial(r, p_eps) >= v] + 2 * m * delta * alpha,
    alpha = max_{i=1..v} P[v - i <= Binomial(r, p_eps) < v] / i.

This right-hand side is exactly the paper's own reference code
(``p_value_DP_audit``, Appendix D), which this module follows; the tests
reproduce the values reported for 75 correct guesses out of 100 (0.702 with
delta = 0; 0.699 with delta = 1e-4; 0.673 with delta = 1e-4 and m = 1000) and
check it against a slow exact-sum reference. The lower bound is the paper's
``get_eps_audit``: the largest epsilon whose p-value is still below
``beta = 1 - confidence``.

Validity of the search. Any epsilon ``e`` with ``p(e; v) < beta`` is a valid
bound, monotone p or not: if training is (eps*, delta)-DP it is also
(e, delta)-DP for every ``e >= eps*``, so ``P[V >= v] <= min_{e >= eps*, v' <= v}
p(e; v')``, a non-increasing function of ``v`` that is ``< beta`` whenever the
returned value exceeds ``eps*``; hence that happens with probability at most
``beta``. The search only ever returns a point with ``p < beta`` (or 0), so it
is conservative; ``p`` is non-decreasing in ``eps`` whenever ``2 m delta <= 1``
(differentiate), which makes it exact there.

Guesses here are fixed in number (``k+`` "in" for the highest scores, ``k-``
"out" for the lowest), so ``r = k+ + k-`` does not depend on the data and the
guesses depend on the output only, never on the coins. Choosing the *best* of
several ``(k+, k-)`` by its result uses the coins and must be paid for:
:func:`one_run_audit_grid` evaluates a grid fixed in advance at level
``beta/|grid|`` each (union bound) and reports the best.

Estimators. The counts ``(m, r, v)`` can be turned into epsilon by other
estimators than the Steinke et al. bound above: ``estimator=`` names one of
:data:`dpaudit.audit.estimators.ESTIMATORS` (default ``"steinke"``, this
module's bound); the guesses and the union bound are the same for all.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from dpaudit.audit.bounds import (
    check_confidence,
    check_count,
    check_delta,
    check_included,
    check_scores,
)
from dpaudit.errors import DpauditError

__all__ = [
    "OneRunGridResult",
    "OneRunResult",
    "default_one_run_grid",
    "one_run_audit",
    "one_run_audit_grid",
    "one_run_ceiling",
    "one_run_epsilon_lower_bound",
    "one_run_guesses",
    "one_run_p_value",
]

_EPS_TOL = 1e-7  # bisection stops when the bracket is narrower than this
_EPS_MAX = 200.0  # p_eps rounds to 1 long before this, so the p-value reaches 1


def _check_mrv(m: object, r: object, v: object) -> tuple[int, int, int]:
    m, r, v = check_count("m", m), check_count("r", r), check_count("v", v)
    if r > m:
        raise DpauditError(f"r (guesses) must be at most m (canaries), got r={r}, m={m}")
    if v > r:
        raise DpauditError(f"v (correct guesses) must be at most r (guesses), got v={v}, r={r}")
    return m, r, v


def _p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """The p-value of Appendix D's ``p_value_DP_audit`` (no validation)."""
    if v == 0:
        return 1.0
    q = float(special.expit(epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0.0:
        return min(tail, 1.0)
    # window_i = P[v - i <= B < v] = sum of pmf(v-1), ..., pmf(v-i): positive terms, no cancellation.
    pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)
    alpha = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * delta * alpha, 1.0)


def one_run_p_value(*, m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P-value of ``v`` correct guesses out of ``r`` under the null "training is (epsilon, delta)-DP".

    ``P[Binomial(r, p_eps) >= v] + 2 m delta alpha`` with
    ``alpha = max_{i=1..v} P[v-i <= Binomial(r, p_eps) < v] / i`` and
    ``p_eps = e^eps/(1+e^eps)``, capped at 1 (Steinke, Nasr, Jagielski 2023,
    main theorem for (eps, delta)-DP; Appendix D ``p_value_DP_audit``). With
    ``delta = 0`` it is the binomial tail of their pure-DP theorem.

    Args:
        m: canaries (each included by a fair coin).
        r: guesses made (abstentions excluded), ``r <= m``.
        v: correct guesses, ``v <= r``.
        epsilon: epsilon of the null hypothesis, ``>= 0``.
        delta: delta of the null hypothesis, in ``[0, 1)``.
    """
    m, r, v = _check_mrv(m, r, v)
    delta = check_delta(delta)
    if (
        isinstance(epsilon, bool)
        or not isinstance(epsilon, numbers.Real)
        or not 0 <= float(epsilon) < math.inf
    ):
        raise DpauditError(f"epsilon must be a finite non-negative number, got {epsilon!r}")
    return _p_value(m, r, v, float(epsilon), delta)


def one_run_epsilon_lower_bound(
    *, m: int, r: int, v: int, delta: float, confidence: float
) -> float:
    """Epsilon lower bound of the one-run audit at confidence ``1 - beta``.

    The largest epsilon (to ``1e-7``, rounded down) whose p-value
    (:func:`one_run_p_value`) is below ``beta``, as the paper's
    ``get_eps_audit`` (Appendix D) finds by bisection; here Brent's method with a
    verified bracket, bisection as fall-back. 0 when even epsilon = 0 is not
    rejected. The returned value always has a p-value below ``beta``. If training is (eps, delta)-DP, the result exceeds eps with
    probability at most ``beta`` (see the module docstring).

    For ``v = r`` and ``delta = 0`` this is :func:`one_run_ceiling`.

    Args:
        m: canaries, r: guesses, v: correct guesses (``v <= r <= m``).
        delta: delta of the DP claim, in ``[0, 1)``.
        confidence: ``1 - beta``, in ``(0, 1)``.
    """
    m, r, v = _check_mrv(m, r, v)
    delta, confidence = check_delta(delta), check_confidence(confidence)
    beta = 1.0 - confidence
    if _p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0  # invariant: p(lo) < beta <= p(hi)
    while _p_value(m, r, v, hi, delta) < beta:
        lo, hi = hi, 2.0 * hi
        if hi > _EPS_MAX:  # unreachable: p_eps == 1.0 there and the p-value is 1
            raise DpauditError("one-run bound did not converge; please report this")
    # Brent's method finds the crossing in few evaluations; the answer is accepted only
    # once a point within _EPS_TOL below it is verified to have p < beta (and one above,
    # p >= beta). Otherwise plain bisection, which keeps the invariant at every step.
    root = optimize.brentq(lambda e: _p_value(m, r, v, e, delta) - beta, lo, hi, xtol=_EPS_TOL / 10)
    below, above = max(root - _EPS_TOL / 2, lo), min(root + _EPS_TOL / 2, hi)
    if _p_value(m, r, v, below, delta) < beta <= _p_value(m, r, v, above, delta):
        return below
    while hi - lo > _EPS_TOL:
        mid = 0.5 * (lo + hi)
        if _p_value(m, r, v, mid, delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_ceiling(r: int, confidence: float) -> float:
    """Largest bound a one-run audit with ``r`` guesses can give (all correct, delta = 0).

    ``P[Binomial(r, p) >= r] = p^r < beta`` iff ``p < x = beta^(1/r)``, so the
    bound is ``log(x / (1 - x))``, roughly ``log(r / log(1/beta))``. Computed as
    ``log(beta)/r - log(-expm1(log(beta)/r))`` for accuracy at large ``r``.
    """
    r = check_count("r", r)
    if r == 0:
        raise DpauditError("r must be at least 1 for a ceiling")
    beta = 1.0 - check_confidence(confidence)
    log_x = math.log(beta) / r
    return max(log_x - math.log(-math.expm1(log_x)), 0.0)


# ----------------------------------------------------------------------------- from scores
@dataclass(frozen=True)
class OneRunResult:
    """A one-run audit with fixed numbers of guesses.

    Attributes:
        epsilon: the lower bound.
        m: canaries; r: guesses (``k_plus + k_minus``); v: correct guesses.
        k_plus: "in" guesses (highest scores); k_minus: "out" guesses (lowest scores).
        delta, confidence: the level at which this bound was computed.
        estimator: the :data:`~dpaudit.audit.estimators.ESTIMATORS` name that
            turned ``(m, r, v)`` into ``epsilon``.
    """

    epsilon: float
    m: int
    r: int
    v: int
    k_plus: int
    k_minus: int
    delta: float
    confidence: float
    estimator: str = "steinke"


def one_run_guesses(
    scores: Sequence[float] | np.ndarray, *, k_plus: int, k_minus: int
) -> np.ndarray:
    """Guesses ``+1`` (in) for the ``k_plus`` highest scores, ``-1`` (out) for the ``k_minus`` lowest, else 0.

    Ties are broken by position (stable sort), which does not depend on the coins.
    """
    s = check_scores("scores", scores)
    k_plus, k_minus = check_count("k_plus", k_plus), check_count("k_minus", k_minus)
    if k_plus + k_minus > s.size:
        raise DpauditError(
            f"k_plus + k_minus must be at most the number of canaries {s.size}, got {k_plus} + {k_minus}"
        )
    order = np.argsort(s, kind="stable")
    guesses = np.zeros(s.size, dtype=np.int8)
    guesses[order[:k_minus]] = -1
    if k_plus:
        guesses[order[s.size - k_plus :]] = 1
    return guesses


def one_run_audit(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    k_plus: int,
    k_minus: int,
    delta: float,
    confidence: float,
    estimator: str = "steinke",
) -> OneRunResult:
    """One-run audit from canary scores (higher = member) and their inclusion coins.

    Guesses with :func:`one_run_guesses`, counts the correct ones and returns
    the ``estimator``'s epsilon (default ``"steinke"``:
    :func:`one_run_epsilon_lower_bound`) with ``m = len(scores)``,
    ``r = k_plus + k_minus``. ``k_plus`` and ``k_minus`` must be fixed before the
    coins are looked at; to try several use :func:`one_run_audit_grid`.

    Raises:
        DpauditError: bad scores, coins or counts, or an unknown ``estimator``.
    """
    from dpaudit.audit.estimators import get_estimator  # it imports this module

    est = get_estimator(estimator)
    s = check_scores("scores", scores)
    inc = check_included(included, s.size)
    guesses = one_run_guesses(s, k_plus=k_plus, k_minus=k_minus)
    v = int(np.sum((guesses == 1) & inc) + np.sum((guesses == -1) & ~inc))
    r = int(k_plus) + int(k_minus)
    eps = est.epsilon(m=int(s.size), r=r, v=v, delta=delta, confidence=confidence)
    return OneRunResult(
        epsilon=eps,
        m=int(s.size),
        r=r,
        v=v,
        k_plus=int(k_plus),
        k_minus=int(k_minus),
        delta=float(delta),
        confidence=float(confidence),
        estimator=est.name,
    )


def default_one_run_grid(m: int) -> tuple[tuple[int, int], ...]:
    """The default ``(k+, k-)`` grid: ``k+ = k- = k`` with ``k`` in {m/20, m/10, m/5, m/2}.

    Rounded down, at least 1 and at most ``m // 2``, duplicates removed; the
    total number of guesses ``r = 2k`` is then about m/10, m/5, 2m/5 and m.
    """
    m = check_count("m", m)
    if m < 2:
        raise DpauditError(f"the one-run audit needs at least 2 canaries, got {m}")
    ks = sorted({min(max(1, m // d), m // 2) for d in (20, 10, 5, 2)})
    return tuple((k, k) for k in ks)


@dataclass(frozen=True)
class OneRunGridResult:
    """One-run audits over a fixed grid of ``(k+, k-)``, union-bounded.

    Attributes:
        best: the grid point with the largest bound, computed at ``per_point_confidence``.
        results: every grid point's audit, in grid order.
        confidence: overall ``1 - beta``; per_point_confidence: ``1 - beta/|grid|``.
        estimator: the estimator of every grid point.
        ceiling: the largest epsilon this grid could give (every guess right):
            the estimator's ceiling at ``per_point_confidence``, maximised over
            the grid's numbers of guesses.
    """

    best: OneRunResult
    results: tuple[OneRunResult, ...]
    confidence: float
    per_point_confidence: float
    estimator: str = "steinke"
    ceiling: float | None = None

    @property
    def epsilon(self) -> float:
        """The lower bound, valid at ``confidence`` for the whole grid."""
        return self.best.epsilon


def one_run_audit_grid(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    grid: Sequence[tuple[int, int] | int] | None = None,
    delta: float,
    confidence: float,
    estimator: str = "steinke",
) -> OneRunGridResult:
    """Best one-run audit over a grid of ``(k+, k-)`` fixed in advance, paid for by a union bound.

    Each grid point is audited by :func:`one_run_audit` at confidence
    ``1 - beta/|grid|``; if training is (eps, delta)-DP, each exceeds eps with
    probability at most ``beta/|grid|``, so the largest exceeds it with
    probability at most ``beta``. The grid must not depend on the coins.

    Args:
        scores: canary scores (higher = member).
        included: the inclusion coin of each canary.
        grid: ``(k_plus, k_minus)`` pairs, or ints ``k`` meaning ``(k, k)``;
            default :func:`default_one_run_grid`.
        delta: delta of the DP claim, in ``[0, 1)``.
        confidence: overall ``1 - beta``, in ``(0, 1)``.
        estimator: an :data:`~dpaudit.audit.estimators.ESTIMATORS` name
            (default ``"steinke"``).

    Raises:
        DpauditError: bad scores, coins or grid, or an unknown ``estimator``.
    """
    from dpaudit.audit.estimators import get_estimator  # it imports this module

    est = get_estimator(estimator)
    s = check_scores("scores", scores)
    confidence = check_confidence(confidence)
    points = default_one_run_grid(s.size) if grid is None else tuple(_grid_point(g) for g in grid)
    if not points:
        raise DpauditError("grid must contain at least one (k_plus, k_minus) pair")
    if len(set(points)) != len(points):
        raise DpauditError("grid contains duplicate (k_plus, k_minus) pairs")
    per = 1.0 - (1.0 - confidence) / len(points)
    results = tuple(
        one_run_audit(
            s, included, k_plus=kp, k_minus=km, delta=delta, confidence=per, estimator=est.name
        )
        for kp, km in points
    )
    best = max(results, key=lambda res: res.epsilon)  # first of equal maxima
    ceiling = max(
        est.ceiling(m=int(s.size), r=r, delta=delta, confidence=per)
        for r in {res.r for res in results}
    )
    return OneRunGridResult(
        best=best,
        results=results,
        confidence=confidence,
        per_point_confidence=per,
        estimator=est.name,
        ceiling=ceiling,
    )


def _grid_point(point: object) -> tuple[int, int]:
    if isinstance(point, (tuple, list)) and len(point) == 2:
        return check_count("k_plus", point[0]), check_count("k_minus", point[1])
    k = check_count("grid entry", point)
    return k, k
