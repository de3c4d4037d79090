"""Clopper-Pearson counts audit, threshold selection, and the EpsilonLowerBound value.

Independent references: scipy's exact binomial confidence intervals, closed
forms, exact binomial sums, the hypothesis-testing region of randomized
response (Kairouz et al. 2015), the analytic Gaussian mechanism's
epsilon(delta) (Balle & Wang 2018, Theorem 8) and Monte-Carlo coverage.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import optimize, stats

from dpaudit.audit.bounds import (
    _counts_epsilon_array,
    _epsilon_from_rates,
    clopper_pearson_lower,
    clopper_pearson_upper,
    epsilon_lower_bound_counts,
    heldout_split,
    threshold_audit,
    threshold_grid_audit,
)
from dpaudit.audit.lower_bound import (
    EpsilonLowerBound,
    audit_threshold,
    audit_threshold_grid,
    bound_threshold,
)
from dpaudit.errors import DpauditError

CP_CASES = [(0, 1), (0, 10), (3, 10), (9, 10), (10, 10), (0, 1000), (17, 1000), (500, 1000)]


# ----------------------------------------------------------------------------- Clopper-Pearson
@pytest.mark.parametrize("k,n", CP_CASES)
@pytest.mark.parametrize("alpha", [0.025, 0.05, 0.2])
def test_clopper_pearson_matches_scipy_exact_interval(k, n, alpha):
    # Two-sided exact interval at level 1 - 2*alpha puts alpha in each tail.
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert clopper_pearson_upper(k, n, alpha) == pytest.approx(ci.high, abs=1e-12)
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(ci.low, abs=1e-12)
    # One-sided interval from scipy directly.
    hi = stats.binomtest(k, n, alternative="less").proportion_ci(1 - alpha, method="exact").high
    lo = stats.binomtest(k, n, alternative="greater").proportion_ci(1 - alpha, method="exact").low
    assert clopper_pearson_upper(k, n, alpha) == pytest.approx(hi, abs=1e-12)
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(lo, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 5000])
@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_clopper_pearson_closed_forms(n, alpha):
    assert clopper_pearson_upper(0, n, alpha) == pytest.approx(1 - alpha ** (1 / n), rel=1e-10)
    assert clopper_pearson_lower(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-10)
    assert clopper_pearson_upper(n, n, alpha) == 1.0
    assert clopper_pearson_lower(0, n, alpha) == 0.0


@pytest.mark.parametrize("n,p", [(20, 0.1), (20, 0.5), (50, 0.93), (200, 0.02)])
def test_clopper_pearson_upper_has_exact_coverage(n, p):
    """P_{k ~ Bin(n, p)}[p <= upper(k)] >= 1 - alpha, summed exactly over k."""
    alpha = 0.05
    ks = np.arange(n + 1)
    covered = np.array([p <= clopper_pearson_upper(int(k), n, alpha) for k in ks])
    assert stats.binom.pmf(ks, n, p)[covered].sum() >= 1 - alpha - 1e-12


def test_clopper_pearson_validation():
    with pytest.raises(DpauditError, match="k must be at most n"):
        clopper_pearson_upper(5, 4, 0.05)
    with pytest.raises(DpauditError, match="alpha"):
        clopper_pearson_upper(1, 4, 1.0)
    with pytest.raises(DpauditError, match="k must be a non-negative integer"):
        clopper_pearson_lower(-1, 4, 0.05)
    assert clopper_pearson_upper(0, 0, 0.05) == 1.0  # no trials: nothing known


# ----------------------------------------------------------------------------- counts bound
def test_counts_bound_by_hand():
    tp, fp, tn, fn, delta, conf = 90, 5, 95, 10, 1e-5, 0.95
    a = 0.025
    fpr_hi = stats.beta.ppf(1 - a, fp + 1, tn)
    fnr_hi = stats.beta.ppf(1 - a, fn + 1, tp)
    expected = max(
        math.log((1 - delta - fnr_hi) / fpr_hi), math.log((1 - delta - fpr_hi) / fnr_hi), 0
    )
    res = epsilon_lower_bound_counts(tp, fp, tn, fn, delta=delta, confidence=conf)
    assert res.epsilon == pytest.approx(expected, rel=1e-12)
    assert res.fpr_upper == pytest.approx(fpr_hi) and res.fnr_upper == pytest.approx(fnr_hi)
    assert res.fpr == pytest.approx(0.05) and res.fnr == pytest.approx(0.1)
    assert res.side == "tpr"


def test_counts_bound_symmetry_between_the_two_ratios():
    """Swapping the roles of members and non-members swaps the two inequalities."""
    a = epsilon_lower_bound_counts(80, 3, 97, 20, delta=0.0, confidence=0.9)
    b = epsilon_lower_bound_counts(97, 20, 80, 3, delta=0.0, confidence=0.9)
    assert a.epsilon == pytest.approx(b.epsilon, rel=1e-12)
    assert (a.side, b.side) == ("tpr", "tnr")
    assert a.fpr_upper == pytest.approx(b.fnr_upper) and a.fnr_upper == pytest.approx(b.fpr_upper)


def test_counts_bound_monotone():
    kw = {"delta": 1e-5, "confidence": 0.95}
    base = epsilon_lower_bound_counts(150, 20, 180, 50, **kw).epsilon
    assert base > 0
    # More true positives (fewer misses) -> no smaller; more false positives -> no larger.
    assert epsilon_lower_bound_counts(170, 20, 180, 30, **kw).epsilon >= base
    assert epsilon_lower_bound_counts(150, 30, 170, 50, **kw).epsilon <= base
    # Scaling all counts up (same rates) tightens the intervals -> larger bound.
    assert epsilon_lower_bound_counts(1500, 200, 1800, 500, **kw).epsilon > base
    # Larger delta, higher confidence -> smaller bound.
    assert epsilon_lower_bound_counts(150, 20, 180, 50, delta=0.05, confidence=0.95).epsilon < base
    assert epsilon_lower_bound_counts(150, 20, 180, 50, delta=1e-5, confidence=0.99).epsilon < base


def test_counts_bound_zero_without_evidence():
    assert epsilon_lower_bound_counts(50, 50, 50, 50, delta=0, confidence=0.95).epsilon == 0.0
    assert epsilon_lower_bound_counts(0, 0, 0, 0, delta=0, confidence=0.95).epsilon == 0.0
    res = epsilon_lower_bound_counts(10, 0, 0, 0, delta=0, confidence=0.95)  # no non-members
    assert res.epsilon == 0.0 and math.isnan(res.fpr) and res.side == "none"


@pytest.mark.parametrize("eps0", [0.5, 1.0, 3.0])
def test_point_estimate_on_randomized_response_is_exact(eps0):
    """RR with eps0: FPR = FNR = 1/(1+e^eps0) lies on the boundary of the eps0-DP region."""
    rate = 1 / (1 + math.exp(eps0))
    assert float(_epsilon_from_rates(rate, rate, 0.0)) == pytest.approx(eps0, rel=1e-12)


def test_counts_bound_is_tight_for_large_counts():
    eps0, n = 1.0, 10**6
    err = round(n / (1 + math.exp(eps0)))
    res = epsilon_lower_bound_counts(n - err, err, n - err, err, delta=0.0, confidence=0.95)
    assert eps0 - 0.02 < res.epsilon <= eps0


def test_counts_bound_validation_names_the_argument():
    with pytest.raises(DpauditError, match="fp"):
        epsilon_lower_bound_counts(1, -1, 1, 1, delta=0, confidence=0.9)
    with pytest.raises(DpauditError, match="tn"):
        epsilon_lower_bound_counts(1, 1, 2.0, 1, delta=0, confidence=0.9)
    with pytest.raises(DpauditError, match="tp"):
        epsilon_lower_bound_counts(True, 1, 1, 1, delta=0, confidence=0.9)
    with pytest.raises(DpauditError, match="delta"):
        epsilon_lower_bound_counts(1, 1, 1, 1, delta=1.0, confidence=0.9)
    with pytest.raises(DpauditError, match="confidence"):
        epsilon_lower_bound_counts(1, 1, 1, 1, delta=0, confidence=1.0)


# ----------------------------------------------------------------------------- coverage
def _rr_scores(rng, n, eps0):
    """Randomized response: the score is the true bit flipped w.p. 1/(1+e^eps0), plus tie noise."""
    keep = math.exp(eps0) / (1 + math.exp(eps0))
    members = (rng.random(n) < keep).astype(float) + 0.1 * rng.random(n)
    nonmembers = (rng.random(n) >= keep).astype(float) + 0.1 * rng.random(n)
    return members, nonmembers


def _coverage_limit(beta, reps):
    return beta + 3 * math.sqrt(beta * (1 - beta) / reps)


def test_counts_bound_coverage_randomized_response():
    """The optimal test on eps0-RR sits on the region's boundary: the hardest case for coverage."""
    eps0, n, reps, conf = 1.0, 2000, 400, 0.95
    rng = np.random.default_rng(1)
    p_err = 1 / (1 + math.exp(eps0))
    over = 0
    for _ in range(reps):
        fp, fn = rng.binomial(n, p_err, size=2)
        eps = epsilon_lower_bound_counts(n - fn, fp, n - fp, fn, delta=0, confidence=conf).epsilon
        over += eps > eps0
    assert over / reps <= _coverage_limit(1 - conf, reps)


@pytest.mark.parametrize(
    "n,eps0,delta0", [(200, 1.0, 0.0), (1000, 2.0, 0.0), (1000, 4.0, 0.0), (1000, 2.0, 0.01)]
)
def test_counts_bound_exact_coverage_on_the_region_boundary(n, eps0, delta0):
    """P[bound > eps0] summed exactly over fp, fn ~ Bin(n, rho) for a mechanism on the boundary.

    Leaky randomized response (reveal w.p. delta0, else eps0-RR) has
    FPR = FNR = (1-delta0)/(1+e^eps0): FPR + e^eps0 FNR = 1 - delta0 exactly.
    (With each CP bound at level beta instead of beta/2 the (1000, 4, 0) case exceeds beta.)
    """
    conf = 0.95
    rho = (1 - delta0) / (1 + math.exp(eps0))
    lo, hi = stats.binom.ppf([1e-13, 1 - 1e-13], n, rho).astype(int)  # the rest is < 1e-12
    k = np.arange(lo, hi + 1)
    fp, fn = np.meshgrid(k, k, indexing="ij")
    eps = _counts_epsilon_array(n - fn, fp, n - fp, fn, delta0, conf)
    weights = np.outer(stats.binom.pmf(k, n, rho), stats.binom.pmf(k, n, rho))
    assert weights[eps > eps0].sum() <= 1 - conf


def test_vectorised_counts_bound_matches_scalar():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 60, size=(50, 4))
    fast = _counts_epsilon_array(*counts.T, 1e-3, 0.9)
    slow = [
        epsilon_lower_bound_counts(*map(int, c), delta=1e-3, confidence=0.9).epsilon for c in counts
    ]
    assert fast == pytest.approx(slow, rel=1e-12, abs=1e-15)


def _gaussian_epsilon(mu, delta):
    """Epsilon of the mu-GDP Gaussian mechanism at delta (Balle & Wang 2018, Theorem 8)."""

    def gap(eps):
        d = stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)
        return d - delta

    return optimize.brentq(gap, 0.0, 100.0, xtol=1e-12)


def test_threshold_audit_coverage_gaussian_scores():
    """Scores N(mu, 1) vs N(0, 1): the Gaussian mechanism with known epsilon(delta)."""
    # delta = 0.1 makes the true epsilon (1.16) reachable with 500 counted canaries a side.
    mu, delta, conf, n, reps = 1.0, 0.1, 0.9, 1000, 200
    eps_true = _gaussian_epsilon(mu, delta)
    rng = np.random.default_rng(2)
    bounds = []
    for rep in range(reps):
        members, nonmembers = rng.normal(mu, 1, n), rng.normal(0, 1, n)
        res = threshold_audit(members, nonmembers, delta=delta, confidence=conf, seed=rep)
        bounds.append(res.epsilon)
    bounds = np.array(bounds)
    assert np.mean(bounds > eps_true) <= _coverage_limit(1 - conf, reps)
    assert np.median(bounds) > 0.5 * eps_true  # and not vacuous


def test_threshold_grid_audit_coverage_laplace_scores():
    """Scores Laplace(mu, 1) vs Laplace(0, 1): eps = mu exactly, delta = 0."""
    mu, conf, n, reps = 1.0, 0.95, 2000, 200
    grid = np.linspace(-1.0, 2.0, 13)
    rng = np.random.default_rng(3)
    bounds = np.array(
        [
            threshold_grid_audit(
                rng.laplace(mu, 1, n), rng.laplace(0, 1, n),
                thresholds=grid, delta=0.0, confidence=conf,
            ).epsilon
            for _ in range(reps)
        ]
    )  # fmt: skip
    assert np.mean(bounds > mu) <= _coverage_limit(1 - conf, reps)
    assert np.median(bounds) > 0.5 * mu


def test_threshold_audit_detects_a_mechanism_weaker_than_claimed():
    rng = np.random.default_rng(4)
    members, nonmembers = _rr_scores(rng, 3000, eps0=3.0)
    res = threshold_audit(members, nonmembers, delta=1e-5, confidence=0.95, seed=0)
    assert res.epsilon > 2.5  # a claim of eps = 2 would be refuted


# ----------------------------------------------------------------------------- threshold selection
def test_heldout_split_is_stratified_and_seeded():
    a = heldout_split(10, 7, 0.5, seed=3)
    b = heldout_split(10, 7, 0.5, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert (a[0].size, a[1].size) == (5, 4)
    assert heldout_split(2, 2, 0.99, seed=0)[0].size == 1  # clipped to keep a counted part


def test_threshold_audit_never_looks_at_counted_scores():
    rng = np.random.default_rng(5)
    members, nonmembers = rng.normal(1, 1, 300), rng.normal(0, 1, 300)
    res = threshold_audit(members, nonmembers, delta=0, confidence=0.95, seed=11)
    sel_m, sel_n = heldout_split(300, 300, 0.5, seed=11)
    assert res.threshold in set(members[sel_m]) | set(nonmembers[sel_n])
    # Perturbing the counted scores (without crossing the threshold) leaves the choice unchanged.
    cnt_m = np.setdiff1d(np.arange(300), sel_m)
    moved = members.copy()
    moved[cnt_m] = np.where(moved[cnt_m] >= res.threshold, moved[cnt_m] + 5, moved[cnt_m] - 5)
    again = threshold_audit(moved, nonmembers, delta=0, confidence=0.95, seed=11)
    assert again.threshold == res.threshold and again.bound == res.bound
    # Counts cover exactly the counted part.
    b = res.bound
    assert (b.tp + b.fn, b.fp + b.tn) == (150, 150)
    assert (res.n_selection_members, res.n_selection_nonmembers) == (150, 150)


def test_threshold_grid_bonferroni():
    rng = np.random.default_rng(6)
    members, nonmembers = rng.normal(1.5, 1, 500), rng.normal(0, 1, 500)
    one = threshold_grid_audit(members, nonmembers, thresholds=[0.75], delta=0, confidence=0.95)
    tp, fn = int(np.sum(members >= 0.75)), int(np.sum(members < 0.75))
    fp, tn = int(np.sum(nonmembers >= 0.75)), int(np.sum(nonmembers < 0.75))
    direct = epsilon_lower_bound_counts(tp, fp, tn, fn, delta=0, confidence=0.95)
    assert one.epsilon == pytest.approx(direct.epsilon, rel=1e-12)
    grid = [0.0, 0.75, 1.5]
    many = threshold_grid_audit(members, nonmembers, thresholds=grid, delta=0, confidence=0.95)
    assert many.per_threshold_confidence == pytest.approx(1 - 0.05 / 3)
    assert many.epsilon == pytest.approx(max(many.epsilons))
    # Paying for the grid: the bound at 0.75 is smaller inside a 3-point grid.
    assert many.epsilons[1] < one.epsilon


def test_threshold_audit_validation():
    with pytest.raises(DpauditError, match="member_scores needs at least 2"):
        threshold_audit([1.0], [0.0, 1.0], delta=0, confidence=0.9, seed=0)
    with pytest.raises(DpauditError, match="NaN"):
        threshold_audit([1.0, np.nan], [0.0, 1.0], delta=0, confidence=0.9, seed=0)
    with pytest.raises(DpauditError, match="heldout_fraction"):
        threshold_audit([1.0, 2.0], [0.0, 1.0], delta=0, confidence=0.9, heldout_fraction=1, seed=0)
    with pytest.raises(DpauditError, match="thresholds needs at least 1"):
        threshold_grid_audit([1.0], [0.0], thresholds=[], delta=0, confidence=0.9)


# ----------------------------------------------------------------------------- EpsilonLowerBound
def test_bound_threshold_record_and_round_trip():
    rec = bound_threshold(90, 5, 95, 10, delta=1e-5, confidence=0.95)
    direct = epsilon_lower_bound_counts(90, 5, 95, 10, delta=1e-5, confidence=0.95)
    assert rec.epsilon == direct.epsilon
    assert (rec.method, rec.n_canaries, rec.n_guesses, rec.n_correct) == (
        "threshold",
        200,
        200,
        185,
    )
    assert rec.threshold_selection == "fixed"
    data = json.loads(json.dumps(rec.to_dict()))
    assert EpsilonLowerBound.from_dict(data) == rec
    with pytest.raises(AttributeError):
        rec.epsilon = 0.0  # frozen


def test_epsilon_lower_bound_validation():
    good = dict(
        method="one-run", epsilon=0.5, delta=1e-5, confidence=0.95,
        n_canaries=10, n_guesses=4, n_correct=3, threshold_selection="fixed",
    )  # fmt: skip
    EpsilonLowerBound(**good)
    for key, value, match in [
        ("epsilon", math.inf, "epsilon"),
        ("epsilon", -0.1, "epsilon"),
        ("delta", 1.0, "delta"),
        ("confidence", 0.0, "confidence"),
        ("n_correct", 5, "n_correct <= n_guesses"),
        ("n_guesses", 11, "n_guesses <= n_canaries"),
        ("n_canaries", -1, "n_canaries"),
        ("method", "", "method"),
    ]:
        with pytest.raises(DpauditError, match=match):
            EpsilonLowerBound(**{**good, key: value})
    with pytest.raises(DpauditError, match="unknown keys"):
        EpsilonLowerBound.from_dict({**good, "extra": 1})


def test_audit_threshold_records():
    rng = np.random.default_rng(7)
    scores = np.concatenate([rng.normal(2, 1, 400), rng.normal(0, 1, 400)])
    member = np.repeat([True, False], 400)
    rec = audit_threshold(scores, member, delta=1e-5, confidence=0.95, seed=1)
    direct = threshold_audit(scores[member], scores[~member], delta=1e-5, confidence=0.95, seed=1)
    assert rec.epsilon == direct.epsilon > 0
    assert rec.n_canaries == 400 and rec.threshold_selection.startswith("heldout(")
    grid = audit_threshold_grid(scores, member, thresholds=[0.5, 1, 1.5], delta=0, confidence=0.9)
    assert grid.confidence == 0.9 and grid.threshold_selection.startswith("bonferroni(thresholds=3")
    with pytest.raises(DpauditError, match="same length"):
        audit_threshold(scores, member[:-1], delta=0, confidence=0.9, seed=0)
