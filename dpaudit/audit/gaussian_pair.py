"""Score-based one-run audit: the canaries' statistics as a pair of Gaussians (white-box).

Agrawal, Wei, Singh, Magdon-Ismail, Zikas, "Let's Ask Gauss: Improved One-Run
Privacy Auditing" (arXiv 2606.12733, 2026) observe that in white-box DP-SGD a
canary's aligned statistic is a normalised sum over steps, asymptotically
Gaussian (§3), and audit the *scores* of the present and absent canaries as a
pair of one-dimensional Gaussians instead of thresholding them into guesses
(§4); thresholding discards what the one-run bounds of Steinke et al. 2023 and
Mahloujifar et al. 2025 cannot use.

This module's estimator (docs/formulas.md#gaussian-pair-audit) takes that model
with one variance: scores of included canaries ~ N(a + μ·τ, τ²), of excluded
ones ~ N(a, τ²). The pair is then exactly μ-GDP, and by post-processing the
training is at least as leaky. With n₁ included and n₀ excluded canaries, the
pooled two-sample statistic

    t = (x̄₁ − x̄₀) / (s_p · √(1/n₁ + 1/n₀))

follows a noncentral t law with n₁ + n₀ − 2 degrees of freedom and
noncentrality λ = μ / √(1/n₁ + 1/n₀) (e.g. Johnson, Kotz, Balakrishnan 1995,
ch. 31). Inverting its one-sided test gives an exact lower confidence bound
μ_lb (P(μ_lb > μ) = 1 − confidence, conditionally on n₁, n₀), and

    ε_lb = ε_{μ_lb}(δ),   δ = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2)

(Dong, Roth, Su 2022, Cor. 2.13), which grows with μ. The exact noncentral-t
inversion and the single variance are this module's choices: the paper's own
confidence procedure was not readable here (docs/decisions.md).

**Guarantee** ``gdp-lower-bound``: the bound holds when the two score laws are
Gaussian with one variance — exactly so for full-batch DP-SGD with Dirac
gradient canaries and the summed statistic (the self-test's correct variant:
each step adds C or 0 plus N(0, σ²C²) to the canary's coordinate), and
asymptotically for Poisson-subsampled runs (the paper's CLT). It is not a
bound for every (ε, δ)-DP mechanism, so it never decides a verdict. It has
no finite ceiling: well-separated scores can support any μ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dpaudit.audit.bounds import check_confidence, check_delta, check_included, check_scores
from dpaudit.errors import DpauditError

__all__ = ["GaussianPairFit", "gaussian_pair_epsilon_lower_bound", "gaussian_pair_fit"]


@dataclass(frozen=True)
class GaussianPairFit:
    """The two-Gaussian fit of one audit's scores.

    Attributes:
        n_in, n_out: included and excluded canaries (n₁, n₀).
        mu_hat: the standardised mean difference (x̄₁ − x̄₀)/s_p (Cohen's d).
        mu_lower: its lower confidence bound at ``confidence`` (≥ 0).
        t_statistic: the pooled two-sample t.
        confidence: 1 − β.
    """

    n_in: int
    n_out: int
    mu_hat: float
    mu_lower: float
    t_statistic: float
    confidence: float


def _split(scores: object, included: object) -> tuple[np.ndarray, np.ndarray]:
    s = check_scores("scores", scores)
    b = check_included(included, s.size)
    x1, x0 = s[b], s[~b]
    if x1.size < 2 or x0.size < 2:
        raise DpauditError(
            f"the Gaussian-pair audit needs at least 2 included and 2 excluded canaries, "
            f"got {x1.size} and {x0.size}"
        )
    return x1, x0


def gaussian_pair_fit(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    confidence: float,
) -> GaussianPairFit:
    """Fit the equal-variance Gaussian pair and bound μ from below (noncentral-t inversion).

    Args:
        scores: one statistic per canary, shape (m,), larger = more likely included.
        included: the canaries' coins, shape (m,).
        confidence: 1 − β, in (0, 1).

    Returns:
        :class:`GaussianPairFit`; ``mu_lower`` is 0 when the data do not reject μ = 0.

    Raises:
        DpauditError: shapes differ, non-finite scores, fewer than 2 canaries on a
            side, scores without spread within the sides (a noise-free run), or
            ``confidence`` ≤ 0.5.
    """
    from scipy import optimize, stats

    confidence = check_confidence(confidence)
    if confidence <= 0.5:
        raise DpauditError(f"the Gaussian-pair audit needs confidence > 0.5, got {confidence}")
    x1, x0 = _split(scores, included)
    n1, n0 = x1.size, x0.size
    df = n1 + n0 - 2
    pooled = ((n1 - 1) * x1.var(ddof=1) + (n0 - 1) * x0.var(ddof=1)) / df
    scale = math.sqrt(1.0 / n1 + 1.0 / n0)
    diff = float(x1.mean() - x0.mean())
    # Spread no larger than float rounding of the scores' magnitude: a noise-free run.
    magnitude = float(np.max(np.abs(np.concatenate([x1, x0]))))
    if pooled <= (1e-12 * max(magnitude, 1e-300)) ** 2:
        if diff <= 0.0:
            return GaussianPairFit(n1, n0, 0.0, 0.0, 0.0, confidence)
        raise DpauditError(
            "the Gaussian-pair audit needs scores that vary within each side (zero variance)"
        )
    t = diff / (math.sqrt(pooled) * scale)
    beta = 1.0 - confidence

    def excess(lam: float) -> float:  # P(T ≥ t; λ) − β, increasing in λ
        return float(stats.nct.sf(t, df, lam)) - beta

    if t <= 0.0 or excess(0.0) >= 0.0:
        lam = 0.0
    else:
        # The root lies below t, where the sf is about 1/2 > β (confidence > 0.5): bracket [0, t].
        try:
            if not excess(t) > 0.0:  # nan, or a t too large for scipy's noncentral t
                raise ValueError(f"P(T >= t; lambda = t) is {excess(t) + beta!r}")
            lam = float(optimize.brentq(excess, 0.0, t, xtol=1e-10, rtol=1e-12))
        except (ValueError, RuntimeError) as exc:
            raise DpauditError(
                f"the Gaussian-pair audit cannot invert the noncentral t at t = {t:.4g} "
                f"({n1} + {n0} canaries): {exc}"
            ) from None
    return GaussianPairFit(n1, n0, t * scale, lam * scale, t, confidence)


def gaussian_pair_epsilon_lower_bound(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    confidence: float,
) -> float:
    """ε at ``delta`` of the μ-GDP curve at :func:`gaussian_pair_fit`'s ``mu_lower``.

    A lower bound on the training's ε with probability ≥ ``confidence`` when the
    included and excluded scores are Gaussian with one variance (module
    docstring); 0 when μ = 0 is not rejected.

    Args:
        scores, included: as :func:`gaussian_pair_fit`.
        delta: in (0, 1). confidence: 1 − β, in (0, 1).

    Raises:
        DpauditError: as :func:`gaussian_pair_fit`; ``delta = 0`` (every μ-GDP
            curve with μ > 0 has infinite ε at δ = 0).
    """
    from dpaudit.edgeworth import gdp_epsilon

    delta = check_delta(delta)
    if delta == 0.0:
        raise DpauditError(
            "the Gaussian-pair audit needs delta > 0 (every mu-GDP curve has infinite epsilon "
            "at delta = 0)"
        )
    fit = gaussian_pair_fit(scores, included, confidence=confidence)
    return 0.0 if fit.mu_lower == 0.0 else float(gdp_epsilon(delta, fit.mu_lower))
