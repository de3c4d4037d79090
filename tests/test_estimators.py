"""One-run estimators: Steinke et al. 2023 and the f-DP audit of Mahloujifar, Melis, Chaudhuri 2025.

References: the published values of each method (recomputed independently and,
for the GDP family, the outputs stored in the authors' PrivacyGuard tutorial),
closed forms, the relations between the estimators, and Monte-Carlo coverage of
each guarantee on mechanisms with known epsilon (randomized response, the
Gaussian mechanism), audited exactly as a run does (default grid, 95 %).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import optimize

from dpaudit.audit.estimators import (
    ESTIMATORS,
    GUARANTEES,
    Estimator,
    get_estimator,
    register_estimator,
)
from dpaudit.audit.fdp import (
    epsdelta_inverse_blowup,
    fdp_rejects,
    gaussian_inverse_blowup,
    mu_lower_bound,
)
from dpaudit.audit.lower_bound import (
    EpsilonLowerBound,
    audit_one_run,
    audit_one_run_estimators,
    audit_threshold,
    bound_one_run,
)
from dpaudit.audit.one_run import default_one_run_grid, one_run_audit_grid
from dpaudit.edgeworth import gdp_epsilon
from dpaudit.errors import DpauditError

NAMES = ("steinke", "fdp-epsdelta", "fdp-gdp")


def _eps(name, m, r, v, delta, confidence=0.95):
    return get_estimator(name).epsilon(m=m, r=r, v=v, delta=delta, confidence=confidence)


# ----------------------------------------------------------------------------- registry
def test_registry_names_and_guarantees():
    assert ESTIMATORS.names()[:3] == NAMES
    assert {n: get_estimator(n).guarantee for n in NAMES} == {
        "steinke": "lower-bound",
        "fdp-epsdelta": "lower-bound",
        "fdp-gdp": "gdp-lower-bound",
    }
    assert set(GUARANTEES) == {"lower-bound", "gdp-lower-bound", "estimate"}
    with pytest.raises(DpauditError, match="did you mean 'fdp-gdp'"):
        get_estimator("fdp-gd")


def test_register_a_new_estimator_and_refuse_bad_ones():
    est = Estimator("half-steinke", "estimate", "test", lambda **kw: 0.5 * _eps("steinke", **kw))
    try:
        assert register_estimator(est) is est
        with pytest.raises(DpauditError, match="already registered"):
            register_estimator(Estimator("half-steinke", "estimate", "other", lambda **kw: 0.0))
        rec = bound_one_run(
            canaries=1000,
            guesses=100,
            correct=100,
            delta=1e-5,
            confidence=0.95,
            estimator="half-steinke",
        )
        assert rec.epsilon == pytest.approx(3.4654 / 2, abs=1e-4)
        assert (rec.estimator, rec.guarantee) == ("half-steinke", "estimate")
    finally:
        ESTIMATORS.unregister("half-steinke")
    with pytest.raises(DpauditError, match="guarantee"):
        Estimator("x", "upper-bound", "test", lambda **kw: 0.0)
    with pytest.raises(DpauditError, match="plain name"):
        Estimator("a b", "estimate", "test", lambda **kw: 0.0)
    broken = Estimator("broken", "estimate", "test", lambda **kw: math.inf)
    with pytest.raises(DpauditError, match="not a finite epsilon"):
        broken.epsilon(m=10, r=5, v=5, delta=0.0, confidence=0.95)


@pytest.mark.parametrize("name", NAMES)
def test_arguments_are_checked(name):
    est = get_estimator(name)
    for kwargs in (
        {"m": 10, "r": 11, "v": 5},
        {"m": 10, "r": 5, "v": 6},
        {"m": -1, "r": 0, "v": 0},
        {"m": 10, "r": 5, "v": True},
    ):
        with pytest.raises(DpauditError):
            est.epsilon(**kwargs, delta=1e-5, confidence=0.95)
    with pytest.raises(DpauditError):
        est.epsilon(m=10, r=5, v=5, delta=1.0, confidence=0.95)
    with pytest.raises(DpauditError):
        est.epsilon(m=10, r=5, v=5, delta=1e-5, confidence=1.0)


# ----------------------------------------------------------------------------- reference values
@pytest.mark.parametrize(
    "m,r,v,delta,beta,expected",
    [
        (1000, 10, 10, 1e-5, 0.05, 1.0150),
        (1000, 100, 100, 0.0, 0.05, 3.4930),
        (1000, 100, 100, 1e-5, 0.05, 3.4654),
        (1000, 100, 100, 1e-5, 0.01, 2.9892),
        (1000, 100, 90, 1e-5, 0.05, 1.6261),
        (1000, 500, 400, 1e-5, 0.05, 1.1980),
        (1000, 1000, 1000, 0.0, 0.05, 5.8091),
        (1000, 1000, 1000, 1e-5, 0.05, 5.7823),
        (10000, 1000, 1000, 1e-5, 0.05, 5.5293),
        (100000, 1000, 1000, 1e-5, 0.05, 3.4890),
        (1000, 100, 60, 1e-5, 0.05, 0.0495),
    ],
)
def test_steinke_reference_values(m, r, v, delta, beta, expected):
    assert _eps("steinke", m, r, v, delta, 1 - beta) == pytest.approx(expected, abs=1e-4)


# m, r, v, mu_lb, eps at delta = 1e-5, eps at delta = 1e-6 (beta = 0.05)
GDP_REFERENCE = [
    (1000, 10, 10, 0.3230, 1.2276, 1.3992),
    (1000, 25, 25, 0.6667, 2.7535, 3.0978),
    (1000, 100, 100, 1.2255, 5.5490, 6.1695),
    (1000, 500, 400, 0.5188, 2.0768, 2.3472),
    (1000, 1000, 1000, 2.3681, 12.3346, 13.5142),
    (100, 80, 70, 0.7048, 2.9324, 3.2956),
]


@pytest.mark.parametrize("m,r,v,mu,eps5,eps6", GDP_REFERENCE)
def test_fdp_gdp_reference_values(m, r, v, mu, eps5, eps6):
    assert mu_lower_bound(m=m, r=r, v=v, confidence=0.95) == pytest.approx(mu, abs=1e-4)
    assert _eps("fdp-gdp", m, r, v, 1e-5) == pytest.approx(eps5, abs=1e-4)
    assert _eps("fdp-gdp", m, r, v, 1e-6) == pytest.approx(eps6, abs=1e-4)


@pytest.mark.parametrize(
    "m,r,v,delta,target_noise,published",
    [
        (100, 80, 70, 1e-6, 0.001, 3.2906),
        (1000, 10, 10, 1e-5, 1.0, 1.2260),
        (1000, 15, 15, 1e-5, 1.0, 1.8776),
        (1000, 25, 25, 1e-5, 1.0, 2.7534),
        (1000, 40, 40, 1e-5, 1.0, 3.6179),
        (1000, 268, 255, 1e-5, 1.0, 4.1374),
        (1000, 429, 404, 1e-5, 1.0, 4.1832),
        (1000, 686, 621, 1e-5, 1.0, 3.6537),
    ],
)
def test_fdp_gdp_reproduces_the_authors_grid_search(m, r, v, delta, target_noise, published):
    """PrivacyGuard's FDPAnalysisNode (the authors' group's code) walks sigma = target + 0.01 i,
    mu = 1/sigma, stops at the first rejected sigma and bisects epsilon to 0.001 from above. Its
    tutorial's stored outputs follow from our mu_lb by the same quantisation."""
    mu = mu_lower_bound(m=m, r=r, v=v, confidence=0.95)
    sigma = target_noise + 0.01 * math.ceil((1 / mu - target_noise) / 0.01 - 1e-9)
    ours = gdp_epsilon(delta, 1 / sigma)
    assert published - 0.0011 <= ours <= published + 1e-4
    assert ours <= _eps("fdp-gdp", m, r, v, delta)  # the grid only rounds down


@pytest.mark.parametrize(
    "m,r,v,delta,expected",
    [
        (1000, 100, 100, 1e-5, 3.4923),
        (1000, 100, 100, 0.0, 3.4930),
        (1000, 1000, 1000, 1e-5, 5.8090),
        (1000, 500, 400, 1e-5, 1.1899),
        (100000, 1000, 1000, 1e-5, 5.8027),
    ],
)
def test_fdp_epsdelta_reference_values(m, r, v, delta, expected):
    assert _eps("fdp-epsdelta", m, r, v, delta) == pytest.approx(expected, abs=1e-4)


# ----------------------------------------------------------------------------- closed forms, relations
@pytest.mark.parametrize("r", [5, 10, 100, 1000])
@pytest.mark.parametrize("beta", [0.05, 0.01])
def test_all_correct_at_delta_zero_is_the_closed_form(r, beta):
    """delta = 0, v = r: P[Bin(r, p) >= r] = p^r = beta at p = beta^(1/r)."""
    x = beta ** (1 / r)
    closed = max(math.log(x / (1 - x)), 0.0)
    for name in ("steinke", "fdp-epsdelta"):
        assert _eps(name, 1000, r, r, 0.0, 1 - beta) == pytest.approx(closed, abs=1e-6), name


def _cases():
    for m in (100, 1000):
        for r in (10, 50, 100, 400, 1000):
            if r <= m:
                for v in range(r // 2, r + 1, max(1, r // 20)):
                    yield m, r, v


def test_fdp_epsdelta_is_close_to_steinke_and_below_fdp_gdp():
    """Both distribution-free bounds agree within 0.1 while 2*m*delta is small; a Gaussian curve
    with epsilon e at delta lies above the (e, delta) curve, so fdp-gdp is never the smaller."""
    gaps = []
    for m, r, v in _cases():
        for delta in (1e-6, 1e-5):
            s, e, g = (_eps(n, m, r, v, delta) for n in NAMES)
            gaps.append(abs(e - s))
            assert e <= g + 1e-6, (m, r, v, delta, e, g)
    assert max(gaps) <= 0.1, max(gaps)
    assert np.mean(gaps) <= 0.02, np.mean(gaps)


def test_fdp_epsdelta_delta_enters_per_canary_not_as_2m_delta():
    """m = 1e5 canaries, delta = 1e-5 (2 m delta = 2): Steinke's bound drops, the f-DP one does not."""
    assert _eps("steinke", 100000, 1000, 1000, 1e-5) < 3.5
    assert _eps("fdp-epsdelta", 100000, 1000, 1000, 1e-5) > 5.8


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("m,r", [(1000, 100), (1000, 1000), (100, 80)])
def test_non_decreasing_in_correct_guesses_and_ceiling_is_all_correct(name, m, r):
    est = get_estimator(name)
    values = [est.epsilon(m=m, r=r, v=v, delta=1e-5, confidence=0.95) for v in range(r + 1)]
    assert np.all(np.diff(values) >= -1e-7), name
    assert values[0] == 0.0 and values[r // 2] == 0.0  # chance level proves nothing
    ceiling = est.ceiling(m=m, r=r, delta=1e-5, confidence=0.95)
    assert ceiling == values[-1] == max(values)


def test_fdp_rejects_is_monotone_in_the_curve_parameter():
    for eps in np.linspace(0, 6, 61):
        rejected = fdp_rejects(
            epsdelta_inverse_blowup(eps, 1e-5), m=1000, r=100, v=100, confidence=0.95
        )
        assert rejected == (eps < 3.4923), eps
    for mu in np.linspace(0, 2, 41):
        rejected = fdp_rejects(gaussian_inverse_blowup(mu), m=1000, r=100, v=100, confidence=0.95)
        assert rejected == (mu < 1.2255), mu


def test_inverse_blowups():
    g = epsdelta_inverse_blowup(1.0, 0.01)
    # f(x) = max{0, 1 - delta - e x, (1 - delta - x)/e}; g inverts 1 - f.
    for x in (0.0, 0.001, 0.1, 0.5, 0.9, 0.999):
        f = max(0.0, 1 - 0.01 - math.e * x, (1 - 0.01 - x) / math.e)
        if f > 0 and 1 - f > 0.01:  # where the blow-up is strictly increasing
            assert g(1 - f) == pytest.approx(x, abs=1e-12)
    assert g(0.005) == 0.0
    h = gaussian_inverse_blowup(1.0)
    assert h(0.5) == pytest.approx(0.158655253931457, abs=1e-12)  # Φ(-1)
    assert (h(0.0), h(1.0)) == (0.0, 1.0)
    assert gaussian_inverse_blowup(0.0)(0.3) == pytest.approx(0.3, abs=1e-15)


def test_gdp_needs_positive_delta():
    with pytest.raises(DpauditError, match="delta > 0"):
        _eps("fdp-gdp", 1000, 100, 100, 0.0)
    assert mu_lower_bound(m=1000, r=100, v=50, confidence=0.95) == 0.0


# ----------------------------------------------------------------------------- plumbing
def _leaky_scores(seed, m=1000, shift=2.0):
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    return included * shift + rng.normal(size=m), included


def test_grid_audit_per_estimator_and_side_by_side():
    scores, included = _leaky_scores(0)
    grid = default_one_run_grid(scores.size)
    per = 1 - 0.05 / len(grid)
    both = audit_one_run_estimators(scores, included, delta=1e-5, confidence=0.95)
    assert list(both) == list(NAMES)  # counts estimators (gauss reads scores: white-box only)
    for name in NAMES:
        res = one_run_audit_grid(scores, included, delta=1e-5, confidence=0.95, estimator=name)
        assert res.estimator == name and all(p.estimator == name for p in res.results)
        expected = max(_eps(name, p.m, p.r, p.v, 1e-5, per) for p in res.results)
        assert res.epsilon == expected
        ceiling = max(
            get_estimator(name).ceiling(m=1000, r=2 * k, delta=1e-5, confidence=per)
            for k, _ in grid
        )
        assert res.ceiling == ceiling >= res.epsilon
        rec = audit_one_run(scores, included, delta=1e-5, confidence=0.95, estimator=name)
        assert rec == both[name]
        assert (rec.epsilon, rec.ceiling, rec.estimator) == (res.epsilon, res.ceiling, name)
        assert rec.guarantee == get_estimator(name).guarantee
    # Same guesses for all: the counts of a grid point do not depend on the estimator.
    counts = {
        n: [
            (p.r, p.v)
            for p in one_run_audit_grid(
                scores, included, delta=1e-5, confidence=0.95, estimator=n
            ).results
        ]
        for n in NAMES
    }
    assert counts["steinke"] == counts["fdp-epsdelta"] == counts["fdp-gdp"]
    assert both["steinke"].epsilon < both["fdp-gdp"].epsilon
    with pytest.raises(DpauditError, match="unknown one-run estimator"):
        audit_one_run_estimators(scores, included, delta=1e-5, confidence=0.95, estimators=["x"])
    with pytest.raises(DpauditError, match="twice"):
        audit_one_run_estimators(
            scores, included, delta=1e-5, confidence=0.95, estimators=["steinke", "steinke"]
        )


def test_lower_bound_record_round_trip_and_old_records():
    rec = bound_one_run(
        canaries=1000, guesses=100, correct=100, delta=1e-5, confidence=0.95, estimator="fdp-gdp"
    )
    assert (rec.estimator, rec.guarantee) == ("fdp-gdp", "gdp-lower-bound")
    assert rec.epsilon == rec.ceiling == pytest.approx(5.5490, abs=1e-4)
    assert EpsilonLowerBound.from_dict(rec.to_dict()) == rec
    old = {k: v for k, v in rec.to_dict().items() if k not in ("estimator", "guarantee", "ceiling")}
    loaded = EpsilonLowerBound.from_dict(old)
    assert (loaded.estimator, loaded.guarantee, loaded.ceiling) == ("steinke", "lower-bound", None)
    thr = audit_threshold(*_leaky_scores(1), delta=1e-5, confidence=0.95, seed=0)
    assert (thr.estimator, thr.guarantee, thr.ceiling) == ("clopper-pearson", "lower-bound", None)
    old_thr = {k: v for k, v in thr.to_dict().items() if k != "estimator"}
    assert EpsilonLowerBound.from_dict(old_thr).estimator == "clopper-pearson"
    with pytest.raises(DpauditError, match="missing keys"):
        EpsilonLowerBound.from_dict({k: v for k, v in old.items() if k != "epsilon"})
    with pytest.raises(DpauditError, match="guarantee"):
        EpsilonLowerBound(**{**rec.to_dict(), "guarantee": "upper"})
    with pytest.raises(DpauditError, match="ceiling"):
        EpsilonLowerBound(**{**rec.to_dict(), "ceiling": -1.0})


def test_bounds_file_entry_loads_old_and_new_records():
    from dpaudit.runfiles.audit import LowerBoundEntry

    rec = bound_one_run(
        canaries=1000,
        guesses=100,
        correct=90,
        delta=1e-5,
        confidence=0.95,
        estimator="fdp-epsdelta",
    )
    entry = LowerBoundEntry.from_dict(rec.to_dict())
    assert EpsilonLowerBound.from_dict(entry.model_dump()) == rec
    old = {k: v for k, v in rec.to_dict().items() if k not in ("estimator", "guarantee", "ceiling")}
    entry = LowerBoundEntry.from_dict(old)
    assert (entry.estimator, entry.guarantee, entry.ceiling) == (None, None, None)
    assert {k: v for k, v in entry.to_dict().items() if v is not None} == old  # only nulls added
    loaded = EpsilonLowerBound.from_dict(entry.model_dump())
    assert (loaded.estimator, loaded.guarantee, loaded.ceiling) == ("steinke", "lower-bound", None)
    assert loaded.epsilon == rec.epsilon


def test_audit_method_uses_the_configured_estimator():
    from dpaudit.audit.methods import AUDIT_METHODS
    from dpaudit.config import AuditConfig

    scores, included = _leaky_scores(2)
    run = AUDIT_METHODS.get("one-run").run
    for name in NAMES:
        rec = run(scores, included, AuditConfig(estimator=name), delta=1e-5, seed=0)
        assert rec == audit_one_run(scores, included, delta=1e-5, confidence=0.95, estimator=name)
        assert rec.ceiling is not None and rec.ceiling >= rec.epsilon


def test_config_validation_knows_the_estimators():
    from dpaudit.errors import ConfigError
    from dpaudit.workflows.validate import field_choices, load_config

    cfg = load_config(sets=["audit.estimator=fdp-epsdelta", "audit.estimators=steinke,fdp-gdp"])
    assert (cfg.audit.estimator, cfg.audit.estimators) == ("fdp-epsdelta", ["steinke", "fdp-gdp"])
    # fdp-gdp holds only for Gaussian-shaped mechanisms: reported beside, never the primary
    with pytest.raises(ConfigError, match="not a lower bound for every DP mechanism"):
        load_config(sets=["audit.estimator=fdp-gdp"])
    assert field_choices()["audit.estimator"] == ESTIMATORS.names()
    with pytest.raises(ConfigError, match="audit.estimator: unknown one-run estimator") as exc:
        load_config(sets=["audit.estimator=fdp"])
    assert exc.value.key == "audit.estimator"
    with pytest.raises(ConfigError, match="audit.estimators"):
        load_config(sets=["audit.estimators=steinke,nope"])


def test_cli_bound_one_run_lists_every_estimator(invoke):
    args = ("bound", "one-run", "--canaries", "1000", "--guesses", "100", "--correct", "100")
    payload = json.loads(
        invoke(*args, "--delta", "1e-5", "--estimator", "fdp-gdp", "--json").output
    )
    assert payload["estimator"] == "fdp-gdp" and payload["guarantee"] == "gdp-lower-bound"
    assert payload["epsilon_lower_bound"] == pytest.approx(5.5490, abs=1e-4)
    table = payload["estimators"]
    assert set(table) == set(NAMES)  # the counts estimators
    assert table["steinke"]["epsilon"] == pytest.approx(3.4654, abs=1e-4)
    assert table["fdp-epsdelta"]["epsilon"] == pytest.approx(3.4923, abs=1e-4)
    for name in NAMES:
        assert table[name]["guarantee"] == get_estimator(name).guarantee
        assert table[name]["ceiling"] == table[name]["epsilon"]  # all correct
    # delta = 0: the default (steinke) still works; fdp-gdp is listed with its reason.
    payload = json.loads(invoke(*args, "--delta", "0", "--json").output)
    assert (
        payload["estimator"] == "steinke"
        and "delta > 0" in payload["estimators"]["fdp-gdp"]["error"]
    )
    text = invoke(*args, "--delta", "1e-5").output
    assert "fdp-epsdelta" in text and "gdp-lower-bound" in text
    result = invoke(*args, "--delta", "1e-5", "--estimator", "nope")
    assert result.exit_code == 2 and result.output.startswith("error: ")


# ----------------------------------------------------------------------------- coverage
M, RUNS, DELTA, CONFIDENCE = 1000, 1000, 1e-5, 0.95
EPSILONS = (1.0, 2.0, 4.0, 8.0)
SLACK = 3 * math.sqrt((1 - CONFIDENCE) * CONFIDENCE / RUNS)


def _gaussian_mu(eps):
    """mu of the Gaussian mechanism that is exactly (eps, DELTA)-DP."""
    return optimize.brentq(lambda mu: gdp_epsilon(DELTA, mu) - eps, 1e-3, 50.0, xtol=1e-13)


def _simulate(mechanism, eps, seed):
    """RUNS one-run games with M fair coins: the scores and coins of each run, (RUNS, M)."""
    rng = np.random.default_rng(seed)
    included = rng.random((RUNS, M)) < 0.5
    if mechanism == "randomized-response":  # eps-DP per canary: the coin, flipped w.p. 1/(1+e^eps)
        keep = rng.random((RUNS, M)) < 1 / (1 + math.exp(-eps))
        scores = np.where(keep, included, ~included).astype(float)
    else:  # score = coin * mu + N(0, 1): exactly mu-GDP, hence (eps, DELTA)-DP, per canary
        scores = included * _gaussian_mu(eps) + rng.normal(size=(RUNS, M))
    return scores, included


@pytest.fixture(scope="module")
def games():
    """(mechanism, eps) -> (counts v per grid point (RUNS,), two raw runs for the plumbing check)."""
    grid = default_one_run_grid(M)
    out = {}
    for mechanism in ("randomized-response", "gaussian"):
        for i, eps in enumerate(EPSILONS):
            scores, included = _simulate(mechanism, eps, seed=1000 * i + len(mechanism))
            order = np.argsort(scores, axis=1, kind="stable")  # one_run_guesses' order
            rows = np.arange(RUNS)[:, None]
            counts = {
                (kp, km): included[rows, order[:, M - kp :]].sum(1)
                + (~included[rows, order[:, :km]]).sum(1)
                for kp, km in grid
            }
            out[mechanism, eps] = (counts, (scores[:2], included[:2]))
    return out


def _grid_bounds(counts, bound):
    """The union-bounded grid audit of every run, from its counts: max over the grid at 1 - beta/|grid|."""
    per = 1 - (1 - CONFIDENCE) / len(counts)
    best = np.zeros(RUNS)
    for (kp, km), v in counts.items():
        values = {int(c): bound(kp + km, int(c), per) for c in np.unique(v)}
        best = np.maximum(best, [values[int(c)] for c in v])
    return best


@pytest.mark.parametrize(
    "name,mechanism",
    [
        ("steinke", "randomized-response"),
        ("steinke", "gaussian"),
        ("fdp-epsdelta", "randomized-response"),
        ("fdp-epsdelta", "gaussian"),
        ("fdp-gdp", "gaussian"),
    ],
)
def test_coverage_on_correct_mechanisms(games, name, mechanism):
    """A correct (eps, 1e-5)-DP mechanism: eps_lb > eps in at most beta of the runs (+ 3 s.e.)."""
    est = get_estimator(name)
    fractions, means = {}, {}
    for eps in EPSILONS:
        counts, (raw_scores, raw_included) = games[mechanism, eps]
        bounds = _grid_bounds(
            counts, lambda r, v, c: est.epsilon(m=M, r=r, v=v, delta=DELTA, confidence=c)
        )
        for j in range(2):  # the vectorised audit is the library's audit
            res = one_run_audit_grid(
                raw_scores[j], raw_included[j], delta=DELTA, confidence=CONFIDENCE, estimator=name
            )
            assert res.epsilon == bounds[j]
        fractions[eps] = float(np.mean(bounds > eps))
        means[eps] = round(float(bounds.mean()), 3)
    message = f"{name} on {mechanism}: P[eps_lb > eps] = {fractions}, mean eps_lb = {means}"
    assert max(fractions.values()) <= (1 - CONFIDENCE) + SLACK, message
    assert means[8.0] > means[1.0] > 0, message  # the audit has power


def test_gdp_family_bound_is_not_a_bound_for_randomized_response(games):
    """Why fdp-gdp is labelled gdp-lower-bound: on eps-DP randomized response it exceeds eps."""
    est = get_estimator("fdp-gdp")
    fractions = {}
    for eps in EPSILONS:
        bounds = _grid_bounds(
            games["randomized-response", eps][0],
            lambda r, v, c: est.epsilon(m=M, r=r, v=v, delta=DELTA, confidence=c),
        )
        fractions[eps] = float(np.mean(bounds > eps))
    assert min(fractions[e] for e in (1.0, 2.0, 4.0)) > 0.5, fractions


def test_mu_lower_bound_coverage_on_the_gaussian_mechanism(games):
    """mu_lb > mu in at most beta of the runs of the mu-GDP Gaussian mechanism (+ 3 s.e.)."""
    fractions, means = {}, {}
    for eps in EPSILONS:
        mu = _gaussian_mu(eps)
        bounds = _grid_bounds(
            games["gaussian", eps][0], lambda r, v, c: mu_lower_bound(m=M, r=r, v=v, confidence=c)
        )
        fractions[round(mu, 4)] = float(np.mean(bounds > mu))
        means[round(mu, 4)] = round(float(bounds.mean()), 3)
    message = f"P[mu_lb > mu] = {fractions}, mean mu_lb = {means}"
    assert max(fractions.values()) <= (1 - CONFIDENCE) + SLACK, message
    assert min(means.values()) > 0, message


# ----------------------------------------------------------------------------- gauss (scores)
def _gauss_bounds(scores, included):
    est = get_estimator("gauss")
    return np.array(
        [
            est.epsilon_from_scores(s, b, delta=DELTA, confidence=CONFIDENCE)
            for s, b in zip(scores, included, strict=True)
        ]
    )


def test_gauss_coverage_on_the_gaussian_mechanism():
    """1,000 audits per eps of the exactly (eps, 1e-5)-DP Gaussian mechanism: eps_lb > eps in <= beta."""
    fractions, means = {}, {}
    for i, eps in enumerate(EPSILONS):
        scores, included = _simulate("gaussian", eps, seed=7000 + i)
        bounds = _gauss_bounds(scores, included)
        fractions[eps] = float(np.mean(bounds > eps))
        means[eps] = round(float(bounds.mean()), 3)
    message = f"gauss: P[eps_lb > eps] = {fractions}, mean eps_lb = {means}"
    assert max(fractions.values()) <= (1 - CONFIDENCE) + SLACK, message
    # The exact noncentral-t interval is not conservative: about beta, not ~0.
    assert np.mean(list(fractions.values())) > 0.02, message
    # Scores carry more than guesses: at eps = 4, m = 1000 the mean is ~3.5 (fdp-gdp ~1.8).
    assert means[8.0] > means[4.0] > 3.0 and means[1.0] > 0.3, message


@pytest.mark.parametrize(
    "q,steps,sigma,statistic",
    [(0.1, 100, 1.0, "sum"), (0.1, 100, 1.0, "likelihood-ratio"), (0.01, 600, 0.6, "sum")],
)
def test_gauss_stays_below_the_true_epsilon_of_subsampled_dp_sgd(q, steps, sigma, statistic):
    """White-box Poisson-subsampled DP-SGD games (not Gaussian scores): eps_lb <= PLD eps in >= 1 - beta.

    Each canary's coordinate gets B_t + sigma*Z_t per step (B_t ~ Bernoulli(q) if included, else 0),
    as a Dirac gradient canary under DP-SGD; the true eps is dp_accounting's PLD (an independent
    library) for the same (q, sigma, T).
    """
    from dpaudit.accounting import get_accountant
    from dpaudit.audit.gradient_canaries import step_log_likelihood_ratio

    true_eps = get_accountant("pld", sampling_rate=q, noise_multiplier=sigma, steps=steps).epsilon(
        DELTA
    )
    rng = np.random.default_rng(11)
    runs, m = 100, 500
    bounds = []
    for _ in range(runs):
        included = rng.random(m) < 0.5
        x = rng.binomial(1, q, size=(m, steps)) * included[:, None]
        x = x + sigma * rng.normal(size=(m, steps))
        if statistic == "sum":
            scores = x.sum(axis=1)
        else:
            scores = step_log_likelihood_ratio(x, sample_rate=q, noise_multiplier=sigma).sum(axis=1)
        bounds.append(
            get_estimator("gauss").epsilon_from_scores(
                scores, included, delta=DELTA, confidence=CONFIDENCE
            )
        )
    bounds = np.array(bounds)
    slack = 3 * math.sqrt((1 - CONFIDENCE) * CONFIDENCE / runs)
    assert np.mean(bounds > true_eps) <= (1 - CONFIDENCE) + slack, (true_eps, bounds.max())
    assert bounds.mean() > 0.5  # and it has power here


def test_gauss_mu_bound_is_the_inverted_t_test():
    """mu_lb = 0 exactly when scipy's one-sided pooled t-test does not reject; else P(T >= t; mu_lb) = beta."""
    from scipy import stats

    from dpaudit.audit.gaussian_pair import gaussian_pair_fit

    rng = np.random.default_rng(3)
    for shift in (0.0, 0.05, 0.1, 0.3, 1.0):
        for _ in range(5):
            included = rng.random(400) < 0.5
            scores = shift * included + rng.normal(size=400)
            fit = gaussian_pair_fit(scores, included, confidence=0.95)
            test = stats.ttest_ind(
                scores[included], scores[~included], equal_var=True, alternative="greater"
            )
            assert fit.t_statistic == pytest.approx(float(test.statistic), rel=1e-9)
            assert (fit.mu_lower == 0.0) == (test.pvalue >= 0.05)
            if fit.mu_lower > 0:
                scale = math.sqrt(1 / fit.n_in + 1 / fit.n_out)
                df = fit.n_in + fit.n_out - 2
                tail = stats.nct.sf(fit.t_statistic, df, fit.mu_lower / scale)
                assert tail == pytest.approx(0.05, abs=1e-7)
                # large-sample check: close to d - z * se (within the noncentral-t correction)
                approx = fit.mu_hat - stats.norm.ppf(0.95) * scale
                assert fit.mu_lower == pytest.approx(approx, abs=0.02)
            assert fit.mu_lower <= fit.mu_hat or fit.mu_hat <= 0


def test_gauss_reads_scores_not_counts():
    """gauss has no counts form, no ceiling, and only white-box audits report it by default."""
    from dpaudit.audit.estimators import estimator_names
    from dpaudit.audit.gradient_canaries import gradient_canary_audits

    est = get_estimator("gauss")
    assert est.inputs == "scores" and est.guarantee == "gdp-lower-bound"
    with pytest.raises(DpauditError, match="works on canary scores"):
        est.epsilon(m=1000, r=100, v=100, delta=DELTA, confidence=CONFIDENCE)
    with pytest.raises(DpauditError, match="works on one-run counts"):
        get_estimator("steinke").epsilon_from_scores([0.0], [True], delta=DELTA, confidence=0.95)
    assert "gauss" not in estimator_names(scores=False)
    assert estimator_names(scores=True) == (*estimator_names(scores=False), "gauss")
    scores, included = _leaky_scores(0, shift=0.5)
    rec = audit_one_run(scores, included, delta=DELTA, confidence=CONFIDENCE, estimator="gauss")
    assert rec.ceiling is None and rec.n_guesses == 1000 and rec.guarantee == "gdp-lower-bound"
    assert rec.n_correct > 500 and rec.threshold_selection == "scores(gaussian pair)"
    every = gradient_canary_audits(scores, included, delta=DELTA, confidence=CONFIDENCE)
    assert every["gauss"] == rec and every["gauss"].epsilon > every["steinke"].epsilon
    with pytest.raises(DpauditError, match="at least 2 included"):
        est.epsilon_from_scores([1.0, 2.0, 3.0], [True, False, False], delta=DELTA, confidence=0.95)
    with pytest.raises(DpauditError, match="delta > 0"):
        est.epsilon_from_scores(scores, included, delta=0.0, confidence=0.95)
    with pytest.raises(DpauditError, match="confidence > 0.5"):
        est.epsilon_from_scores(scores, included, delta=DELTA, confidence=0.5)
    # noise-free scores: T or 0, up to float rounding — no spread, no Gaussian fit
    flat = np.where(included, 10.0, 0.0) + 1e-15 * np.arange(included.size)
    with pytest.raises(DpauditError, match="vary within each side"):
        est.epsilon_from_scores(flat, included, delta=DELTA, confidence=0.95)
    # never the primary estimator (it has no ceiling and reads scores)
    from dpaudit.errors import ConfigError
    from dpaudit.workflows.validate import load_config

    with pytest.raises(ConfigError, match="reads canary scores"):
        load_config(sets=["audit.estimator=gauss"])
    assert load_config(sets=["audit.estimators=steinke,gauss"]).audit.estimators[-1] == "gauss"


def test_gauss_is_not_a_bound_for_randomized_response():
    """Why gauss is labelled gdp-lower-bound: on eps-DP randomized response (binary scores) it exceeds eps."""
    fractions = {}
    for i, eps in enumerate((1.0, 2.0)):
        scores, included = _simulate("randomized-response", eps, seed=9000 + i)
        fractions[eps] = float(np.mean(_gauss_bounds(scores[:100], included[:100]) > eps))
    assert min(fractions.values()) > 0.5, fractions
