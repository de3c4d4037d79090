"""Analytical approximations of (ε, δ) for Poisson-subsampled Gaussian DP-SGD.

Pure maths behind the two *approximate* accountants of
:mod:`dpaudit.accounting`: ``gdp``, the central limit theorem (the normal,
order-0 term), and ``edgeworth``, its second-order Edgeworth refinement.

GDP: Dong, Roth, Su (2022), "Gaussian Differential Privacy" (JRSS-B), show
that T steps of the subsampled Gaussian tend to μ-GDP with
μ = q·√(T·(e^{1/σ²} − 1)) (their CLT for NoisySGD; Bu, Dong, Long, Su 2020,
"Deep Learning with Gaussian Differential Privacy"), and μ-GDP is
(ε, δ(ε))-DP with δ(ε) = Φ(−ε/μ + μ/2) − e^ε·Φ(−ε/μ − μ/2) (Cor. 2.13).
A limit, which can over- or under-state ε; for q = 1 the exact μ = √T/σ is
used instead (Cor. 3.3), and the result is exact.

Edgeworth: one DP-SGD step with sampling rate q and noise multiplier σ is
the pair of distributions, in the standardised coordinate z (noise std 1, sensitivity 1/σ),

    P = N(0, 1)        Q = (1 − q)·N(0, 1) + q·N(1/σ, 1),

whose privacy-loss log-likelihood ratio (PLLR) is

    L(z) = log dQ/dP(z) = log(1 − q + q·exp(z/σ − 1/(2σ²))).

(docs/formulas.md#edgeworth also writes it in the unstandardised coordinate x = σz.)
T steps compose to the sum of T i.i.d. copies of L, so the cumulants of the
sum are T times the per-step cumulants. Wang, Gao, Zhang, Shen, Su (2022),
"Edgeworth Accountant: An Analytical Approach to Differential Privacy
Composition" (arXiv:2206.04236), approximate the law of that sum under P and
under Q by its second-order Edgeworth expansion and read δ off the
hockey-stick identity

    δ(ε) = Q(Σ L > ε) − e^ε · P(Σ L > ε).

This is an *estimate*, not a certified bound: a truncated Edgeworth series
has an error of order T^{-3/2} that the paper's rigorous variant bounds
separately (and that bound can be vacuous at small δ). The estimate can fall
below the true ε, most visibly at few steps, where the tail that e^ε
multiplies is poorly approximated. The accountant was used for LLM
fine-tuning by Behnia et al. (2022), "EW-Tune" (arXiv:2210.15042).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special

__all__ = [
    "edgeworth_delta",
    "edgeworth_epsilon",
    "edgeworth_sf",
    "gdp_delta",
    "gdp_epsilon",
    "gdp_mu",
    "gdp_noise",
    "pllr_cumulants",
]

_Z_TAIL = 14.0  # |z| beyond which φ(z)·poly(z) is negligible (φ(14) ≈ 1e-43)
_MAX_NODES = 400_000  # caps the grid for σ ≲ 0.01, where ε is astronomically large anyway


# ----------------------------------------------------------------------------- GDP (CLT)
def gdp_mu(sampling_rate: float, noise_multiplier: float, steps: int) -> float:
    """μ = q·√(T·(e^{1/σ²} − 1)) (Dong, Roth, Su 2022, CLT for NoisySGD); ``inf`` if σ = 0.

    At q = 1 there is no subsampling and T Gaussian steps are exactly
    √T/σ-GDP (Dong, Roth, Su 2022, Cor. 3.3); the CLT formula would overstate
    that (√(e^{1/σ²} − 1) > 1/σ), so the exact value is returned.
    """
    if noise_multiplier == 0 or 1.0 / noise_multiplier**2 > 700:
        return math.inf
    if sampling_rate == 1:
        return math.sqrt(steps) / noise_multiplier
    return sampling_rate * math.sqrt(steps * math.expm1(1.0 / noise_multiplier**2))


def gdp_delta(epsilon: float, mu: float) -> float:
    """δ(ε) = Φ(−ε/μ + μ/2) − e^ε·Φ(−ε/μ − μ/2) of μ-GDP (Dong, Roth, Su 2022, Cor. 2.13)."""
    a = special.ndtr(-epsilon / mu + mu / 2)
    b = math.exp(min(epsilon + special.log_ndtr(-epsilon / mu - mu / 2), 700.0))
    return float(a - b)


def gdp_epsilon(delta: float, mu: float) -> float:
    """ε of μ-GDP at ``delta``: the root of :func:`gdp_delta`, which decreases in ε."""
    if math.isinf(mu):
        return math.inf
    if gdp_delta(0.0, mu) <= delta:
        return 0.0
    hi = max(1.0, mu * mu)
    while gdp_delta(hi, mu) > delta:
        hi *= 2.0
    return float(
        optimize.brentq(lambda e: gdp_delta(e, mu) - delta, 0.0, hi, xtol=1e-12, rtol=1e-12)
    )


def gdp_noise(epsilon: float, delta: float, q: float, steps: int) -> float:
    """σ at which the GDP approximation gives ``epsilon`` (bisection on log σ in [1e-3, 1e4]).

    Used as the starting point of every accountant's noise search.
    """
    lo, hi = math.log(1e-3), math.log(1e4)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if gdp_epsilon(delta, gdp_mu(q, math.exp(mid), steps)) <= epsilon:
            hi = mid
        else:
            lo = mid
    return math.exp(hi)


# ----------------------------------------------------------------------------- Edgeworth
def _pllr(z: np.ndarray, q: float, sigma: float) -> np.ndarray:
    """L(z) = log(1 − q + q·exp(z/σ − 1/(2σ²))), stable for q = 1 and large z."""
    log_1mq = math.log1p(-q) if q < 1 else -math.inf
    return np.logaddexp(log_1mq, math.log(q) + z / sigma - 0.5 / sigma**2)


def _cumulants_from_samples(values: np.ndarray, weights: np.ndarray) -> tuple[float, ...]:
    """First four cumulants of a discrete law (weights sum to 1), via central moments."""
    mean = float(np.dot(weights, values))
    c = values - mean
    m2 = float(np.dot(weights, c**2))
    m3 = float(np.dot(weights, c**3))
    m4 = float(np.dot(weights, c**4))
    return mean, m2, m3, m4 - 3.0 * m2**2


def pllr_cumulants(q: float, sigma: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Cumulants κ1..κ4 of one step's PLLR L under P and under Q.

    Integrates against the Gaussian densities on a uniform grid (the trapezoid
    rule, spectrally accurate for these smooth, Gaussian-decaying integrands)
    fine enough to resolve the bend of L, whose width is about σ.

    Args:
        q: sampling rate, 0 < q ≤ 1.
        sigma: noise multiplier, σ > 0.

    Returns:
        ((κ1, κ2, κ3, κ4) under P, (κ1, κ2, κ3, κ4) under Q).
    """
    shift = 1.0 / sigma
    width = 2.0 * _Z_TAIL + shift
    step = max(min(0.01, sigma / 40.0), width / _MAX_NODES)
    z = np.arange(-_Z_TAIL, _Z_TAIL + shift + step, step)
    loss = _pllr(z, q, sigma)
    phi_p = np.exp(-0.5 * z**2)
    phi_q = (1.0 - q) * phi_p + q * np.exp(-0.5 * (z - shift) ** 2)
    w_p = phi_p / phi_p.sum()
    w_q = phi_q / phi_q.sum()
    return _cumulants_from_samples(loss, w_p), _cumulants_from_samples(loss, w_q)


def edgeworth_sf(x: np.ndarray, gamma1: float, gamma2: float) -> np.ndarray:
    """Second-order Edgeworth approximation of P(S > x) for standardised S.

    1 − F(x) = Φ̄(x) + φ(x)·[γ1/6·He2(x) + γ2/24·He3(x) + γ1²/72·He5(x)],
    He2 = x² − 1, He3 = x³ − 3x, He5 = x⁵ − 10x³ + 15x (probabilists' Hermite
    polynomials); γ1 is the skewness, γ2 the excess kurtosis of S.
    """
    x = np.asarray(x, dtype=float)
    he2 = x**2 - 1.0
    he3 = x**3 - 3.0 * x
    he5 = x**5 - 10.0 * x**3 + 15.0 * x
    pdf = np.exp(-0.5 * x**2) / math.sqrt(2.0 * math.pi)
    correction = gamma1 / 6.0 * he2 + gamma2 / 24.0 * he3 + gamma1**2 / 72.0 * he5
    return np.clip(special.ndtr(-x) + pdf * correction, 0.0, 1.0)


def _sum_sf(eps: np.ndarray, kappa: tuple[float, ...], steps: int) -> np.ndarray:
    """Edgeworth P(Σ_{i≤T} L_i > ε) from the per-step cumulants of L."""
    k1, k2, k3, k4 = kappa
    sd = math.sqrt(steps * k2)
    gamma1 = k3 / (math.sqrt(steps) * k2**1.5)
    gamma2 = k4 / (steps * k2**2)
    return edgeworth_sf((eps - steps * k1) / sd, gamma1, gamma2)


def _direction_delta(eps: np.ndarray, k_num: tuple, k_den: tuple, steps: int) -> np.ndarray:
    """δ(ε) = A(ΣL > ε) − e^ε·B(ΣL > ε) for cumulants of L under A (num) and B (den)."""
    tail_num = _sum_sf(eps, k_num, steps)
    tail_den = _sum_sf(eps, k_den, steps)
    with np.errstate(divide="ignore", over="ignore"):
        weighted = np.where(tail_den > 0, np.exp(eps + np.log(np.maximum(tail_den, 1e-300))), 0.0)
    return tail_num - weighted


def _delta(eps: np.ndarray, k_p: tuple, k_q: tuple, steps: int) -> np.ndarray:
    """Edgeworth δ(ε), max over directions, from the per-step cumulants under P and Q."""
    flip = np.array([-1.0, 1.0, -1.0, 1.0])
    remove = _direction_delta(eps, k_q, k_p, steps)
    add = _direction_delta(eps, tuple(flip * k_p), tuple(flip * k_q), steps)
    return np.maximum(remove, add)


def edgeworth_delta(eps: np.ndarray | float, q: float, sigma: float, steps: int) -> np.ndarray:
    """Edgeworth estimate of δ(ε), the larger over both directions of adjacency.

    Remove direction: δ = Q(ΣL > ε) − e^ε P(ΣL > ε) with L = log dQ/dP.
    Add direction: the loss is −L and the roles of P and Q swap, so its
    cumulants are (−κ1, κ2, −κ3, κ4) under P (numerator) and Q (denominator).

    Args:
        eps: one or more ε ≥ 0.
        q: sampling rate.
        sigma: noise multiplier (> 0).
        steps: number of composed steps T.
    """
    k_p, k_q = pllr_cumulants(q, sigma)
    return _delta(np.asarray(eps, dtype=float), k_p, k_q, steps)


def edgeworth_epsilon(delta: float, q: float, sigma: float, steps: int) -> float:
    """Edgeworth estimate of ε(δ): the largest ε at which δ(ε) still reaches ``delta``.

    The truncated series need not be monotone in ε, so δ(ε) is scanned on a
    grid up to a point where it is below ``delta`` and the last crossing is
    refined with Brent's method. Returns 0 when δ(ε) < ``delta`` on the whole
    grid and ``inf`` when no ε up to 1e6 brings it below ``delta``.
    """
    k_p, k_q = pllr_cumulants(q, sigma)

    def f(e: np.ndarray | float) -> np.ndarray:
        return _delta(np.asarray(e, dtype=float), k_p, k_q, steps) - delta

    # Scale of the composed loss: |mean| + a generous number of standard deviations.
    hi = steps * abs(k_p[0]) + 40.0 * math.sqrt(steps * k_p[1]) + 1.0
    while float(f(hi)) >= 0:
        hi *= 2.0
        if hi > 1e6:
            return math.inf
    grid = np.concatenate([[0.0], np.geomspace(1e-6 * hi, hi, 2000)])
    vals = f(grid)
    above = np.nonzero(vals >= 0)[0]
    if above.size == 0:
        return 0.0
    i = int(above[-1])
    return float(
        optimize.brentq(lambda e: float(f(e)), grid[i], grid[i + 1], xtol=1e-12, rtol=1e-10)
    )
