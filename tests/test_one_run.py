"""One-run audit (Steinke, Nasr, Jagielski 2023): p-value, epsilon lower bound, guesses, grid.

Independent references: a slow exact-sum transcription of the p-value, the
paper's worked numbers, the closed-form ceiling for all-correct guesses, and
Monte-Carlo coverage on mechanisms with known epsilon (randomized response,
Laplace scores, randomized response that leaks with probability delta).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from dpaudit.audit.lower_bound import audit_one_run, bound_one_run
from dpaudit.audit.one_run import (
    default_one_run_grid,
    one_run_audit,
    one_run_audit_grid,
    one_run_ceiling,
    one_run_epsilon_lower_bound,
    one_run_guesses,
    one_run_p_value,
)
from dpaudit.errors import DpauditError


def _slow_p_value(m, r, v, eps, delta):
    """The p-value from its definition, by exact binomial sums (O(v^2), small r only)."""
    q = math.exp(eps) / (1 + math.exp(eps))

    def pmf(k):
        return math.comb(r, k) * q**k * (1 - q) ** (r - k)

    tail = math.fsum(pmf(k) for k in range(v, r + 1))  # P[B >= v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    alpha = max(math.fsum(pmf(k) for k in range(v - i, v)) / i for i in range(1, v + 1))
    return min(tail + 2 * m * delta * alpha, 1.0)


# ----------------------------------------------------------------------------- p-value
@pytest.mark.parametrize("seed", range(6))
def test_p_value_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        r = int(rng.integers(1, 60))
        m = r + int(rng.integers(0, 200))
        v = int(rng.integers(0, r + 1))
        eps = float(rng.uniform(0, 4))
        delta = float(rng.choice([0.0, 1e-6, 1e-4, 1e-2]))
        fast = one_run_p_value(m=m, r=r, v=v, epsilon=eps, delta=delta)
        assert fast == pytest.approx(_slow_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-15)


def test_p_value_pure_dp_is_the_binomial_tail():
    for r, v, eps in [(100, 75, 0.5), (1000, 900, 2.0), (50, 50, 3.0)]:
        q = special.expit(eps)
        got = one_run_p_value(m=r, r=r, v=v, epsilon=eps, delta=0)
        assert got == pytest.approx(stats.binom.sf(v - 1, r, q), rel=1e-12)


def test_p_value_paper_example():
    """v = 75 of r = 100 and eps = log 3 (p_eps = 3/4): P[Bin(100, 3/4) >= 75] = 0.553."""
    p = one_run_p_value(m=100, r=100, v=75, epsilon=math.log(3), delta=0)
    assert p == pytest.approx(0.5535, abs=5e-4)


@pytest.mark.parametrize(
    "m,r,v,delta", [(1000, 100, 75, 1e-4), (1000, 1000, 700, 1e-3), (100000, 1510, 1439, 1e-5)]
)
def test_p_value_non_decreasing_in_epsilon(m, r, v, delta):
    """Needed for the bisection to find the largest rejected epsilon (2*m*delta > 1 included)."""
    ps = [one_run_p_value(m=m, r=r, v=v, epsilon=e, delta=delta) for e in np.linspace(0, 8, 161)]
    assert np.all(np.diff(ps) >= -1e-15)


# ----------------------------------------------------------------------------- published values
@pytest.mark.parametrize(
    "m,r,v,delta,expected",
    [
        # Values reported for the paper's worked example (arXiv:2305.08846 v1, Appendix D,
        # as quoted by independent reimplementations): 75 of 100 guesses correct, 95%.
        (100, 100, 75, 0.0, 0.702),
        (100, 100, 75, 1e-4, 0.699),
        (1000, 100, 75, 1e-4, 0.673),
        # Reported with Figure 11 (Section 7, as quoted likewise): 1439 of 1510 correct,
        # m = 10^5, delta = 1e-5.
        (100000, 1510, 1439, 1e-5, 2.675),
    ],
)
def test_reproduces_published_values(m, r, v, delta, expected):
    eps = one_run_epsilon_lower_bound(m=m, r=r, v=v, delta=delta, confidence=0.95)
    assert eps == pytest.approx(expected, abs=1.5e-3)


# ----------------------------------------------------------------------------- ceiling
@pytest.mark.parametrize("r", [1, 10, 100, 1000, 100000])
@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_ceiling_closed_form(r, confidence):
    x = (1 - confidence) ** (1 / r)
    closed = max(math.log(x / (1 - x)), 0.0)  # negative (no bound) only for r = 1
    assert one_run_ceiling(r, confidence) == pytest.approx(closed, rel=1e-9, abs=1e-12)
    eps = one_run_epsilon_lower_bound(m=r, r=r, v=r, delta=0, confidence=confidence)
    assert eps == pytest.approx(closed, abs=1e-6) and eps <= closed
    if r >= 1000:  # the familiar approximation log(r / ln(1/beta))
        approx = math.log(r / math.log(1 / (1 - confidence)))
        assert closed == pytest.approx(approx, abs=0.01)


def test_ceiling_for_one_guess_at_95_percent():
    # One correct guess rejects eps only while p_eps = e^eps/(1+e^eps) < 0.05: impossible.
    assert one_run_ceiling(1, 0.95) == 0.0


# ----------------------------------------------------------------------------- monotonicity
def test_bound_monotone_in_correct_guesses():
    eps = [
        one_run_epsilon_lower_bound(m=1000, r=200, v=v, delta=1e-5, confidence=0.95)
        for v in range(100, 201, 5)
    ]
    assert np.all(np.diff(eps) >= 0)
    assert eps[-1] > eps[10] > 0


def test_bound_monotone_in_delta_m_and_confidence():
    def f(**kw):
        args = {"m": 1000, "r": 500, "v": 400, "delta": 1e-5, "confidence": 0.95} | kw
        return one_run_epsilon_lower_bound(**args)

    by_delta = [f(delta=d) for d in (0.0, 1e-7, 1e-5, 1e-4, 1e-3)]
    assert np.all(np.diff(by_delta) <= 0) and by_delta[0] > by_delta[-1]
    by_m = [f(m=m) for m in (500, 1000, 10000, 100000)]
    assert np.all(np.diff(by_m) <= 0) and by_m[0] > by_m[-1]
    by_conf = [f(confidence=c) for c in (0.8, 0.9, 0.95, 0.99)]
    assert np.all(np.diff(by_conf) < 0)


@pytest.mark.parametrize("v", [0, 50, 100, 105])
def test_bound_zero_near_chance(v):
    assert one_run_epsilon_lower_bound(m=200, r=200, v=v, delta=0, confidence=0.95) == 0.0
    assert one_run_epsilon_lower_bound(m=200, r=200, v=v, delta=1e-5, confidence=0.95) == 0.0


def test_bound_validation_names_the_argument():
    kw = {"m": 10, "r": 5, "v": 3, "delta": 0.0, "confidence": 0.95}
    for bad, match in [
        ({"r": 11}, "r \\(guesses\\) must be at most m"),
        ({"v": 6}, "v \\(correct guesses\\) must be at most r"),
        ({"m": -1}, "m must be a non-negative integer"),
        ({"v": 2.0}, "v must be a non-negative integer"),
        ({"delta": -1e-9}, "delta"),
        ({"confidence": 1.0}, "confidence"),
    ]:
        with pytest.raises(DpauditError, match=match):
            one_run_epsilon_lower_bound(**(kw | bad))
    with pytest.raises(DpauditError, match="epsilon"):
        one_run_p_value(m=10, r=5, v=3, epsilon=-1.0, delta=0)


# ----------------------------------------------------------------------------- coverage
def _limit(beta, reps):
    return beta + 3 * math.sqrt(beta * (1 - beta) / reps)


def _exact_exceedance(m, r, p_correct, eps0, delta, conf):
    """P[bound > eps0] when V ~ Binomial(r, p_correct), summed exactly over v (tails < 1e-15 skipped)."""
    lo, hi = (int(x) for x in stats.binom.ppf([1e-15, 1 - 1e-15], r, p_correct))
    vs = np.arange(lo, hi + 1)
    exceed = [
        one_run_epsilon_lower_bound(m=m, r=r, v=int(v), delta=delta, confidence=conf) > eps0
        for v in vs
    ]
    return float(stats.binom.pmf(vs, r, p_correct)[np.array(exceed)].sum())


@pytest.mark.parametrize("eps0,r", [(0.5, 200), (1.0, 1000), (3.0, 500)])
def test_exact_coverage_pure_dp_randomized_response(eps0, r):
    """Each guess correct w.p. exactly p_eps0, the extreme case of the theorem: level <= beta, and close."""
    conf = 0.95
    level = _exact_exceedance(r, r, special.expit(eps0), eps0, 0.0, conf)
    assert 0.5 * (1 - conf) < level <= 1 - conf


@pytest.mark.parametrize("delta0", [1e-4, 1e-3, 0.05])
def test_exact_coverage_approximate_dp_leaky_randomized_response(delta0):
    """Per canary: reveal the coin w.p. delta0, else eps0-RR -- an (eps0, delta0)-DP mechanism."""
    eps0, m, conf = 1.0, 1000, 0.95
    p_correct = delta0 + (1 - delta0) * special.expit(eps0)
    assert _exact_exceedance(m, m, p_correct, eps0, delta0, conf) <= 1 - conf
    if delta0 == 0.05:  # ignoring delta (pure-DP analysis) refutes the true eps0 far too often
        assert _exact_exceedance(m, m, p_correct, eps0, 0.0, conf) > 4 * (1 - conf)


def test_coverage_simulated_randomized_response():
    """Monte-Carlo version of the exact check above (seeded)."""
    eps0, m, reps, conf = 1.0, 1000, 300, 0.95
    rng = np.random.default_rng(10)
    vs = rng.binomial(m, special.expit(eps0), size=reps)
    eps = np.array(
        [one_run_epsilon_lower_bound(m=m, r=m, v=int(v), delta=0, confidence=conf) for v in vs]
    )
    assert np.mean(eps > eps0) <= _limit(1 - conf, reps)
    assert np.median(eps) > 0.8 * eps0


def _laplace_canary_run(rng, m, eps0):
    """Scores S_i + Laplace(1/eps0), coins S_i fair: each coin is eps0-DP in the output."""
    included = rng.random(m) < 0.5
    return included + rng.laplace(0, 1 / eps0, m), included


def test_coverage_one_run_audit_laplace_scores():
    eps0, m, reps, conf = 2.0, 1000, 300, 0.95
    rng = np.random.default_rng(12)
    eps = []
    for _ in range(reps):
        scores, inc = _laplace_canary_run(rng, m, eps0)
        res = one_run_audit(scores, inc, k_plus=50, k_minus=50, delta=0, confidence=conf)
        eps.append(res.epsilon)
    eps = np.array(eps)
    assert np.mean(eps > eps0) <= _limit(1 - conf, reps)
    assert np.median(eps) > 0.3 * eps0


def test_coverage_one_run_grid_laplace_scores():
    eps0, m, reps, conf = 2.0, 1000, 150, 0.95
    rng = np.random.default_rng(13)
    eps = []
    for _ in range(reps):
        scores, inc = _laplace_canary_run(rng, m, eps0)
        eps.append(one_run_audit_grid(scores, inc, delta=1e-6, confidence=conf).epsilon)
    assert np.mean(np.array(eps) > eps0) <= _limit(1 - conf, reps)


# ----------------------------------------------------------------------------- guesses and audits
def test_guesses_top_and_bottom_with_stable_ties():
    scores = [0.5, 0.1, 0.9, 0.5, 0.3, 0.9]
    g = one_run_guesses(scores, k_plus=2, k_minus=2)
    assert g.tolist() == [0, -1, 1, 0, -1, 1]
    g = one_run_guesses(scores, k_plus=1, k_minus=0)  # tie at 0.9: the later position wins
    assert g.tolist() == [0, 0, 0, 0, 0, 1]
    assert one_run_guesses(scores, k_plus=0, k_minus=0).tolist() == [0] * 6
    with pytest.raises(DpauditError, match="k_plus \\+ k_minus"):
        one_run_guesses(scores, k_plus=4, k_minus=3)


def test_one_run_audit_counts_and_bound():
    scores = np.arange(20, dtype=float)
    included = scores >= 10  # perfect separation
    res = one_run_audit(scores, included, k_plus=5, k_minus=5, delta=0, confidence=0.95)
    assert (res.m, res.r, res.v) == (20, 10, 10)
    assert res.epsilon == pytest.approx(one_run_ceiling(10, 0.95), abs=1e-6)
    flipped = one_run_audit(scores, ~included, k_plus=5, k_minus=5, delta=0, confidence=0.95)
    assert (flipped.v, flipped.epsilon) == (0, 0.0)
    with pytest.raises(DpauditError, match="included"):
        one_run_audit(scores, included[:-1], k_plus=1, k_minus=1, delta=0, confidence=0.9)
    with pytest.raises(DpauditError, match="included must hold booleans"):
        one_run_audit(scores, np.full(20, 2), k_plus=1, k_minus=1, delta=0, confidence=0.9)


def test_default_grid():
    assert default_one_run_grid(1000) == ((50, 50), (100, 100), (200, 200), (500, 500))
    assert default_one_run_grid(7) == ((1, 1), (3, 3))
    with pytest.raises(DpauditError, match="at least 2 canaries"):
        default_one_run_grid(1)


def test_grid_is_union_bounded():
    rng = np.random.default_rng(14)
    scores, inc = _laplace_canary_run(rng, 400, 3.0)
    grid = [(20, 20), 40, (100, 0)]
    res = one_run_audit_grid(scores, inc, grid=grid, delta=0, confidence=0.9)
    assert res.per_point_confidence == pytest.approx(1 - 0.1 / 3)
    assert [(x.k_plus, x.k_minus) for x in res.results] == [(20, 20), (40, 40), (100, 0)]
    assert res.epsilon == max(x.epsilon for x in res.results) > 0
    for x in res.results:  # each point is audited at the corrected level
        direct = one_run_audit(
            scores, inc, k_plus=x.k_plus, k_minus=x.k_minus, delta=0, confidence=0.9
        )
        assert x.epsilon <= direct.epsilon
    with pytest.raises(DpauditError, match="duplicate"):
        one_run_audit_grid(scores, inc, grid=[10, (10, 10)], delta=0, confidence=0.9)


# ----------------------------------------------------------------------------- records
def test_bound_one_run_record():
    rec = bound_one_run(canaries=1000, guesses=100, correct=75, delta=1e-4, confidence=0.95)
    assert rec.method == "one-run" and rec.epsilon == pytest.approx(0.673, abs=1.5e-3)
    assert (rec.n_canaries, rec.n_guesses, rec.n_correct) == (1000, 100, 75)
    for bad, match in [
        ({"guesses": 1001}, "guesses must be at most canaries"),
        ({"correct": 101}, "correct must be at most guesses"),
        ({"canaries": -5}, "canaries"),
        ({"delta": 1.5}, "delta"),
        ({"confidence": 0}, "confidence"),
    ]:
        kw = {"canaries": 1000, "guesses": 100, "correct": 75, "delta": 1e-4, "confidence": 0.95}
        with pytest.raises(DpauditError, match=match):
            bound_one_run(**(kw | bad))


def test_audit_one_run_record():
    rng = np.random.default_rng(15)
    scores, inc = _laplace_canary_run(rng, 1000, 4.0)
    rec = audit_one_run(scores, inc, delta=1e-5, confidence=0.95)
    grid = one_run_audit_grid(scores, inc, delta=1e-5, confidence=0.95)
    assert rec.epsilon == grid.epsilon > 0 and rec.confidence == 0.95
    assert rec.threshold_selection.startswith("union-bound(grid=4")
    one = audit_one_run(scores, inc, delta=1e-5, confidence=0.95, grid=[(100, 100)])
    assert one.threshold_selection == "fixed(k_plus=100, k_minus=100)" and one.n_guesses == 200
