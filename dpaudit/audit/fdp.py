"""The one-run f-DP audit: the same single training run, tested against a whole trade-off curve.

Mahloujifar, Melis, Chaudhuri 2025, "Auditing f-Differential Privacy in One Run"
(ICML 2025, arXiv:2410.22235); docs/formulas.md#one-run-f-dp-audit and
docs/formulas.md#one-run-gdp-audit.

Game: as in :mod:`dpaudit.audit.one_run` (Steinke et al. 2023). ``m`` canaries,
each included by an independent fair coin; the auditor makes ``r`` guesses
(``c'`` in the paper) from the output alone, abstaining on the others, and
``v`` (``c``) of them are correct.

Null hypothesis: training is f-DP with respect to each canary for a trade-off
curve ``f`` (Dong, Roth, Su 2022). Write ``g = f̄⁻¹`` for the inverse of the
blow-up ``f̄(x) = 1 - f(x)``. The test ("audit with abstention"; the paper's
recursive procedure, called ``audit_rh_with_cap`` in the authors' released
code) supposes ``P[V >= v] >= tau`` and derives lower bounds ``r_i`` and
``h_i`` on the probability that a random canary is guessed correctly
(respectively wrongly) with at least ``i`` correct guesses in all::

    r_v = tau * v / m,    h_v = tau * (r - v) / m
    for i = v-1, ..., 0:
        h_i = max(h_{i+1}, g(r_{i+1}))
        r_i = r_{i+1} + i / (r - i) * (h_i - h_{i+1})
    reject f  iff  r_0 + h_0 > r / m

since a random canary is guessed at all with probability exactly ``r/m``, a
lower bound above it is a contradiction, so ``P[V >= v] < tau`` under the
null (``tau = beta = 1 - confidence``; membership guesses, alphabet size
``k = 2``, so the paper's factor ``k - 1`` is 1). ``r_i + h_i`` never
decreases along the recursion, so it stops as soon as it exceeds ``r/m``
(reject), or once ``h`` stops growing (nothing changes after that).

Curves:

- (eps, delta)-DP, ``f̄⁻¹(y) = max{0, (y - delta) e^-eps, 1 - delta - e^eps (1 - y)}``
  (the inverse of ``f̄(x) = min{1, delta + e^eps x, 1 - e^-eps (1 - delta - x)}``,
  one minus the curve ``f_{eps,delta}`` of Dong, Roth, Su 2022, Section 2, whose
  Proposition 2.5 states that (eps, delta)-DP is f_{eps,delta}-DP; that number was
  not verified against the PDF): a lower bound
  valid for every (eps, delta)-DP mechanism, :func:`fdp_epsilon_lower_bound`;
- mu-GDP, ``f̄⁻¹(x) = Φ(Φ⁻¹(x) - mu)``: :func:`mu_lower_bound` rejects
  "training is mu-GDP"; :func:`gdp_epsilon_lower_bound` converts that mu to epsilon
  at delta by ``delta = Φ(-eps/mu + mu/2) - e^eps Φ(-eps/mu - mu/2)`` (Dong, Roth,
  Su 2022, Cor. 2.13). That epsilon bounds the mechanism's epsilon only if its
  trade-off curve is Gaussian (e.g. DP-SGD analysed by GDP); an (eps, delta)-DP
  mechanism with a different curve can exceed it.

Validity of the search, as for the Steinke bound: the returned parameter is
always one that the test rejects (bisection keeps a rejected lower end), and
every parameter above the true one describes the mechanism too. The event "some
parameter at or above the true one is rejected" implies "V >= c*" for the
smallest count c* any of them rejects; that count comes from one fixed curve,
whose rejection proves ``P[V >= c*] < tau``. So the returned value exceeds the truth with probability
below ``tau`` whether or not rejection is monotone in the parameter.

What could not be checked against the paper itself (only its abstract and the
authors' released implementation were readable): algorithm and theorem numbers
are not cited. The reference values in ``tests/test_estimators.py`` come from
independent re-implementations, and the outputs stored in the authors' group's
PrivacyGuard tutorial (a coarser grid search over mu) are reproduced to 0.001.
"""

from __future__ import annotations

import functools
import math
import numbers
import statistics
from collections.abc import Callable

from dpaudit.audit.bounds import check_confidence, check_count, check_delta
from dpaudit.edgeworth import gdp_epsilon
from dpaudit.errors import DpauditError

__all__ = [
    "InverseBlowUp",
    "epsdelta_inverse_blowup",
    "fdp_epsilon_lower_bound",
    "fdp_rejects",
    "gaussian_inverse_blowup",
    "gdp_epsilon_lower_bound",
    "mu_lower_bound",
]

InverseBlowUp = Callable[[float], float]
"""``g = f̄⁻¹``: non-decreasing map of ``[0, 1]`` into ``[0, 1]``."""

_TOL = 1e-7  # bisection stops when the bracket is narrower than this (epsilon or mu)
_EPS_MAX = 200.0  # the (eps, delta) curve at eps = 200 rejects nothing a float can tell apart
_MU_MAX = 64.0  # Φ(Φ⁻¹(x) - 64) < 1e-300 for every float x < 1: nothing is rejected
_CACHE = 1 << 16
_NORMAL = statistics.NormalDist()
_SQRT_HALF = math.sqrt(0.5)


def _check_mrv(m: object, r: object, v: object) -> tuple[int, int, int]:
    m, r, v = check_count("m", m), check_count("r", r), check_count("v", v)
    if r > m:
        raise DpauditError(f"r (guesses) must be at most m (canaries), got r={r}, m={m}")
    if v > r:
        raise DpauditError(f"v (correct guesses) must be at most r (guesses), got v={v}, r={r}")
    return m, r, v


def _check_parameter(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DpauditError(f"{name} must be a finite non-negative number, got {value!r}")
    if not 0.0 <= float(value) < math.inf:
        raise DpauditError(f"{name} must be a finite non-negative number, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- curves
def epsdelta_inverse_blowup(epsilon: float, delta: float) -> InverseBlowUp:
    """``f̄⁻¹(y) = max{0, (y - delta) e^-eps, 1 - delta - e^eps (1 - y)}`` of (eps, delta)-DP.

    Args:
        epsilon: ``>= 0``, finite. delta: in ``[0, 1)``.

    Raises:
        DpauditError: a parameter out of range.
    """
    epsilon, delta = _check_parameter("epsilon", epsilon), check_delta(delta)
    return _epsdelta(epsilon, delta)


def _epsdelta(epsilon: float, delta: float) -> InverseBlowUp:
    up, down = math.exp(epsilon), math.exp(-epsilon)

    def g(y: float) -> float:
        return max(0.0, (y - delta) * down, 1.0 - delta - up * (1.0 - y))

    return g


def gaussian_inverse_blowup(mu: float) -> InverseBlowUp:
    """``f̄⁻¹(x) = Φ(Φ⁻¹(x) - mu)`` of mu-GDP (0 at 0, 1 at 1).

    Raises:
        DpauditError: ``mu`` negative or not finite.
    """
    return _gaussian(_check_parameter("mu", mu))


def _gaussian(mu: float) -> InverseBlowUp:
    inv_cdf = _NORMAL.inv_cdf

    def g(x: float) -> float:
        if x <= 0.0:
            return 0.0
        if x >= 1.0:
            return 1.0
        return 0.5 * math.erfc((mu - inv_cdf(x)) * _SQRT_HALF)  # Φ(Φ⁻¹(x) - mu)

    return g


# ----------------------------------------------------------------------------- the test
def _rejects(g: InverseBlowUp, m: int, r: int, v: int, tau: float) -> bool:
    """The recursion of the module docstring (no validation); True = the curve is rejected."""
    if v == 0:
        return False  # r_0 + h_0 = tau * r / m <= r / m
    total = r / m
    rr, h = tau * v / m, tau * (r - v) / m  # r_v + h_v = tau * r / m <= r / m
    for i in range(v - 1, -1, -1):
        h_new = g(rr)
        if h_new <= h:
            return False  # h and hence r stay as they are from here on
        rr += i / (r - i) * (h_new - h)
        h = h_new
        if rr + h > total:
            return True
    return False


def fdp_rejects(
    inverse_blowup: InverseBlowUp, *, m: int, r: int, v: int, confidence: float
) -> bool:
    """Whether ``v`` correct of ``r`` guesses on ``m`` canaries rejects "training is f-DP".

    The recursive audit with abstention of Mahloujifar, Melis, Chaudhuri 2025
    (module docstring; docs/formulas.md#one-run-f-dp-audit) at level
    ``tau = 1 - confidence``: if training is f-DP, it rejects with probability
    below ``tau``.

    Args:
        inverse_blowup: ``f̄⁻¹``, non-decreasing on ``[0, 1]``
            (:func:`epsdelta_inverse_blowup`, :func:`gaussian_inverse_blowup`).
        m: canaries; r: guesses (abstentions excluded); v: correct guesses, ``v <= r <= m``.
        confidence: ``1 - tau``, in ``(0, 1)``.

    Raises:
        DpauditError: counts or confidence out of range.
    """
    m, r, v = _check_mrv(m, r, v)
    tau = 1.0 - check_confidence(confidence)
    return _rejects(inverse_blowup, m, r, v, tau)


def _largest_rejected(rejects: Callable[[float], bool], upper_limit: float, what: str) -> float:
    """Largest parameter in ``[0, upper_limit)`` that ``rejects`` (to ``_TOL``, a rejected point), or 0."""
    if not rejects(0.0):
        return 0.0
    lo, hi = 0.0, 1.0  # invariant: rejects(lo), not rejects(hi)
    while rejects(hi):
        lo, hi = hi, 2.0 * hi
        if hi > upper_limit:  # unreachable: the curve there rejects nothing
            raise DpauditError(f"the f-DP {what} search did not converge; please report this")
    while hi - lo > _TOL:
        mid = 0.5 * (lo + hi)
        if rejects(mid):
            lo = mid
        else:
            hi = mid
    return lo


# ----------------------------------------------------------------------------- lower bounds
def fdp_epsilon_lower_bound(*, m: int, r: int, v: int, delta: float, confidence: float) -> float:
    """Epsilon lower bound from the f-DP audit with the (eps, delta) curve (distribution-free).

    The largest epsilon (to 1e-7, rounded down) whose curve
    :func:`epsdelta_inverse_blowup` the test :func:`fdp_rejects` rejects, 0
    if none is. If training is (eps, delta)-DP the result exceeds eps with
    probability below ``1 - confidence``, like the Steinke et al. bound
    (:func:`~dpaudit.audit.one_run.one_run_epsilon_lower_bound`), to which it is
    close (equal at delta = 0 and v = r; its delta enters per canary, not as
    ``2 m delta``). Cached by ``(m, r, v, delta, confidence)``.
    docs/formulas.md#one-run-f-dp-audit.

    Args:
        m: canaries; r: guesses; v: correct guesses (``v <= r <= m``).
        delta: in ``[0, 1)``. confidence: ``1 - beta``, in ``(0, 1)``.

    Raises:
        DpauditError: an argument out of range.
    """
    m, r, v = _check_mrv(m, r, v)
    return _fdp_epsilon(m, r, v, check_delta(delta), check_confidence(confidence))


@functools.lru_cache(maxsize=_CACHE)
def _fdp_epsilon(m: int, r: int, v: int, delta: float, confidence: float) -> float:
    tau = 1.0 - confidence
    return _largest_rejected(
        lambda eps: _rejects(_epsdelta(eps, delta), m, r, v, tau), _EPS_MAX, "epsilon"
    )


def mu_lower_bound(*, m: int, r: int, v: int, confidence: float) -> float:
    """Lower bound on mu: the largest mu (to 1e-7, rounded down) for which "training is mu-GDP" is rejected.

    :func:`fdp_rejects` with :func:`gaussian_inverse_blowup` (Mahloujifar,
    Melis, Chaudhuri 2025, who search the same family); 0 if no mu > 0 is
    rejected. If training is mu-GDP the result exceeds mu with probability
    below ``1 - confidence``. Reference: m = 1000, r = v = 100 at 95 % gives
    1.2255. Cached by ``(m, r, v, confidence)``. docs/formulas.md#one-run-gdp-audit.

    Args:
        m: canaries; r: guesses; v: correct guesses (``v <= r <= m``).
        confidence: ``1 - beta``, in ``(0, 1)``.

    Raises:
        DpauditError: an argument out of range.
    """
    m, r, v = _check_mrv(m, r, v)
    return _mu(m, r, v, check_confidence(confidence))


@functools.lru_cache(maxsize=_CACHE)
def _mu(m: int, r: int, v: int, confidence: float) -> float:
    tau = 1.0 - confidence
    return _largest_rejected(lambda mu: _rejects(_gaussian(mu), m, r, v, tau), _MU_MAX, "mu")


def gdp_epsilon_lower_bound(*, m: int, r: int, v: int, delta: float, confidence: float) -> float:
    """Epsilon at ``delta`` of the mu-GDP curve at :func:`mu_lower_bound` (a GDP-family bound).

    ``eps`` solves ``delta = Φ(-eps/mu + mu/2) - e^eps Φ(-eps/mu - mu/2)``
    (Dong, Roth, Su 2022, Cor. 2.13; :func:`dpaudit.edgeworth.gdp_epsilon`),
    increasing in mu, so rounding mu down keeps it conservative. Valid as a
    lower bound on epsilon only if training's trade-off curve is Gaussian
    (``guarantee = "gdp-lower-bound"``). Reference: m = 1000, r = v = 100,
    delta = 1e-5 at 95 % gives 5.5490. Cached by ``(m, r, v, delta, confidence)``.
    docs/formulas.md#one-run-gdp-audit.

    Args:
        m: canaries; r: guesses; v: correct guesses (``v <= r <= m``).
        delta: in ``(0, 1)``. confidence: ``1 - beta``, in ``(0, 1)``.

    Raises:
        DpauditError: an argument out of range, or ``delta = 0`` (every mu-GDP
            curve with mu > 0 has infinite epsilon at delta = 0).
    """
    m, r, v = _check_mrv(m, r, v)
    delta, confidence = check_delta(delta), check_confidence(confidence)
    if delta == 0.0:
        raise DpauditError(
            "the GDP-family bound needs delta > 0 (every mu-GDP curve has infinite epsilon "
            "at delta = 0)"
        )
    return _gdp_epsilon(m, r, v, delta, confidence)


@functools.lru_cache(maxsize=_CACHE)
def _gdp_epsilon(m: int, r: int, v: int, delta: float, confidence: float) -> float:
    mu = _mu(m, r, v, confidence)
    return 0.0 if mu == 0.0 else float(gdp_epsilon(delta, mu))
