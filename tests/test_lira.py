"""LiRA (Carlini et al. 2022): the vectorised maths against a per-example loop, the
Gaussian optimum on synthetic statistics, and tiny GPT-2 reference models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _shadow_models import StubModel, shadow_setup
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from dpaudit.attacks.lira import (
    FIXED_VARIANCE_BELOW,
    VARIANCE_FLOOR,
    ClassifierLiraAttack,
    LiraAttack,
    lira_scores,
    scaled_logit,
)
from dpaudit.attacks.mia import Attack, LossAttack
from dpaudit.attacks.scores import AttackScores
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError

# -- a slow, independent reference -------------------------------------------------------


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def slow_lira(s, ref, ref_in, *, online=True, fixed_variance=None) -> np.ndarray:
    """One example at a time with scipy.stats.norm, following the documented rules."""
    n, k = ref.shape
    ins = [[float(ref[i, j]) for j in range(k) if ref_in[i, j]] for i in range(n)]
    outs = [[float(ref[i, j]) for j in range(k) if not ref_in[i, j]] for i in range(n)]

    def ss_dof(groups):
        ss = sum(sum((v - _mean(g)) ** 2 for v in g) for g in groups if g)
        return ss, sum(len(g) - 1 for g in groups if g)

    ss_in, dof_in = ss_dof(ins)
    ss_out, dof_out = ss_dof(outs)

    def pooled(ss, dof):
        if dof:
            return ss / dof
        if dof_in + dof_out:
            return (ss_in + ss_out) / (dof_in + dof_out)
        return float(np.var(ref))

    pooled_in, pooled_out = pooled(ss_in, dof_in), pooled(ss_out, dof_out)
    both = [i for i in range(n) if ins[i] and outs[i]]
    gap = _mean([_mean(ins[i]) - _mean(outs[i]) for i in both]) if both else None
    if fixed_variance is None:
        used = [min(len(ins[i]), len(outs[i])) if online else len(outs[i]) for i in range(n)]
        fixed_variance = min(used) < FIXED_VARIANCE_BELOW

    scores = []
    for i in range(n):
        mu_in = _mean(ins[i]) if ins[i] else None
        mu_out = _mean(outs[i]) if outs[i] else mu_in - gap
        if mu_in is None:
            mu_in = mu_out + gap
        var_in = pooled_in if fixed_variance or len(ins[i]) < 2 else np.var(ins[i], ddof=1)
        var_out = pooled_out if fixed_variance or len(outs[i]) < 2 else np.var(outs[i], ddof=1)
        sd_in = math.sqrt(max(var_in, VARIANCE_FLOOR))
        sd_out = math.sqrt(max(var_out, VARIANCE_FLOOR))
        if online:
            scores.append(norm.logpdf(s[i], mu_in, sd_in) - norm.logpdf(s[i], mu_out, sd_out))
        else:
            scores.append(norm.logcdf(s[i], mu_out, sd_out))
    return np.array(scores)


def _random_case(n: int = 40, k: int = 6, seed: int = 0):
    """Statistics with per-example difficulty and random (uneven) IN/OUT counts."""
    rng = np.random.default_rng(seed)
    ref_in = rng.random((n, k)) < 0.5
    ref_in[0] = True  # an example with no OUT reference
    ref_in[1] = False  # and one with no IN reference
    ref_in[2, :] = [True] + [False] * (k - 1)  # a single IN reference
    base = rng.normal(0, 2, size=n)
    ref = base[:, None] + ref_in * 1.0 + rng.normal(0, 0.7, size=(n, k))
    s = base + rng.normal(0.5, 1, size=n)
    return s, ref, ref_in


# -- the maths ---------------------------------------------------------------------------


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("fixed_variance", [True, False, None])
def test_matches_slow_reference(online, fixed_variance):
    s, ref, ref_in = _random_case()
    got = lira_scores(s, ref, ref_in, online=online, fixed_variance=fixed_variance)
    want = slow_lira(s, ref, ref_in, online=online, fixed_variance=fixed_variance)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("online", [True, False])
def test_no_degree_of_freedom_falls_back_to_global_variance(online):
    """K = 2 (one IN, one OUT per example): no within-example spread to pool."""
    rng = np.random.default_rng(3)
    ref_in = np.zeros((10, 2), dtype=bool)
    ref_in[np.arange(10), rng.integers(0, 2, size=10)] = True
    ref = rng.normal(size=(10, 2)) + ref_in
    s = rng.normal(size=10)
    got = lira_scores(s, ref, ref_in, online=online, fixed_variance=False)
    np.testing.assert_allclose(got, slow_lira(s, ref, ref_in, online=online), rtol=1e-9)


def test_identical_reference_statistics_stay_finite():
    ref = np.full((4, 4), -2.0)
    ref_in = np.tile([True, True, False, False], (4, 1))
    for online in (True, False):
        got = lira_scores(np.array([-2.0, -1.0, -3.0, -2.0]), ref, ref_in, online=online)
        assert np.isfinite(got).all()


def test_automatic_variance_choice():
    rng = np.random.default_rng(4)
    few = rng.random((30, 8)) < 0.5
    ref = rng.normal(size=(30, 8)) + few
    s = rng.normal(size=30)
    np.testing.assert_array_equal(
        lira_scores(s, ref, few), lira_scores(s, ref, few, fixed_variance=True)
    )
    k = 2 * FIXED_VARIANCE_BELOW
    many = np.tile(np.arange(k) < FIXED_VARIANCE_BELOW, (30, 1))
    ref = rng.normal(size=(30, k)) * rng.uniform(0.5, 2, size=(30, 1)) + many
    np.testing.assert_array_equal(
        lira_scores(s, ref, many), lira_scores(s, ref, many, fixed_variance=False)
    )
    assert not np.allclose(
        lira_scores(s, ref, many), lira_scores(s, ref, many, fixed_variance=True)
    )


def test_offline_increases_with_the_statistic():
    """Offline is one-sided: a higher statistic is more member-like."""
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(1, 6)).repeat(50, axis=0)
    ref_in = np.zeros((50, 6), dtype=bool)
    s = np.linspace(-5, 5, 50)
    got = lira_scores(s, ref, ref_in, online=False)
    assert np.all(np.diff(got) > 0)
    assert np.isfinite(lira_scores(np.array([-1e6]), ref[:1], ref_in[:1], online=False)).all()


def test_online_needs_in_and_out_somewhere():
    rng = np.random.default_rng(6)
    ref, s = rng.normal(size=(5, 4)), rng.normal(size=5)
    with pytest.raises(DpauditError, match="online=False"):
        lira_scores(s, ref, np.zeros((5, 4), dtype=bool))
    assert np.isfinite(lira_scores(s, ref, np.zeros((5, 4), dtype=bool), online=False)).all()
    with pytest.raises(DpauditError, match="OUT"):
        lira_scores(s, ref, np.ones((5, 4), dtype=bool), online=False)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros(3), np.zeros((3, 2)), np.zeros((2, 2), dtype=bool)), "shape"),
        ((np.zeros(3), np.zeros((4, 2)), np.zeros((3, 2), dtype=bool)), "ref_stats"),
        ((np.zeros(3), np.zeros((3, 2)), np.full((3, 2), 2)), "booleans"),
        ((np.array([0.0, np.nan, 0.0]), np.zeros((3, 2)), np.eye(3, 2, dtype=bool)), "finite"),
    ],
)
def test_rejects_bad_inputs(args, match):
    with pytest.raises(DpauditError, match=match):
        lira_scores(*args)


def test_gaussian_statistics_reach_the_optimal_auc():
    """IN ~ N(μ_i + 1, 1), OUT ~ N(μ_i, 1): the best test has AUC Φ(d/√2), d = 1.

    Per-example difficulty μ_i varies widely, so an uncalibrated threshold on
    the statistic itself does far worse.
    """
    rng = np.random.default_rng(7)
    n, k = 4000, 2 * FIXED_VARIANCE_BELOW
    base = rng.normal(0, 3, size=n)
    ref_in = np.tile(np.arange(k) < k // 2, (n, 1))
    ref = base[:, None] + ref_in + rng.normal(size=(n, k))
    member = rng.random(n) < 0.5
    s = base + member + rng.normal(size=n)
    optimum = norm.cdf(1 / math.sqrt(2))
    for online in (True, False):
        for fixed in (True, False):
            auc = roc_auc_score(
                member, lira_scores(s, ref, ref_in, online=online, fixed_variance=fixed)
            )
            assert auc == pytest.approx(optimum, abs=0.03), (online, fixed, auc)
    assert roc_auc_score(member, s) < optimum - 0.1


def test_scaled_logit():
    rng = np.random.default_rng(8)
    logits = rng.normal(0, 2, size=(20, 4))
    labels = rng.integers(0, 4, size=20)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    py = p[np.arange(20), labels]
    np.testing.assert_allclose(scaled_logit(logits, labels), np.log(py / (1 - py)), rtol=1e-9)
    # p rounds to 1 in float64, yet φ is exact: 60 − log 2.
    assert scaled_logit(np.array([[60.0, 0.0, 0.0]]), np.array([0]))[0] == pytest.approx(
        60 - math.log(2), rel=1e-15
    )
    with pytest.raises(DpauditError, match="labels"):
        scaled_logit(logits, np.full(20, 4))


# -- the attack classes, on stub models ----------------------------------------------------

TEXTS = ("alpha beta", "gamma delta", "epsilon zeta", "eta theta")
RECORDS = [Record(f"r{i}", t, label=i % 3) for i, t in enumerate(TEXTS)]
MEMBERSHIP = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=bool)


def _stubs(seed: int) -> tuple[StubModel, list[StubModel]]:
    rng = np.random.default_rng(seed)

    def one() -> StubModel:
        return StubModel(
            logprobs={t: -rng.uniform(0.1, 4, size=rng.integers(1, 6)) for t in TEXTS},
            logits={t: rng.normal(size=3) for t in TEXTS},
        )

    return one(), [one() for _ in range(MEMBERSHIP.shape[1])]


def test_lm_attack_is_lira_on_mean_logprobs():
    target, refs = _stubs(9)
    mean = lambda m: np.array([np.mean(lp) for lp in m.token_logprobs(TEXTS)])  # noqa: E731
    for online in (True, False):
        attack = LiraAttack(online=online)
        result = attack.score(
            target, RECORDS, is_member=[1, 0, 1, 0], references=refs, ref_membership=MEMBERSHIP
        )
        assert isinstance(result, AttackScores) and result.attack == "lira"
        assert result.params == {"online": online, "fixed_variance": None}
        assert result.example_ids == ("r0", "r1", "r2", "r3")
        want = lira_scores(
            mean(target), np.column_stack([mean(r) for r in refs]), MEMBERSHIP, online=online
        )
        np.testing.assert_allclose(result.scores, want, rtol=1e-12)


def test_classifier_attack_is_lira_on_scaled_logits():
    target, refs = _stubs(10)
    labels = np.array([r.label for r in RECORDS])
    phi = lambda m: scaled_logit(m.classify(TEXTS), labels)  # noqa: E731
    result = ClassifierLiraAttack().score(
        target, RECORDS, is_member=[1, 0, 1, 0], references=refs, ref_membership=MEMBERSHIP
    )
    assert result.attack == "clf_lira"
    want = lira_scores(phi(target), np.column_stack([phi(r) for r in refs]), MEMBERSHIP)
    np.testing.assert_allclose(result.scores, want, rtol=1e-12)
    with pytest.raises(DpauditError, match="labelled"):
        ClassifierLiraAttack().score(
            target,
            [Record("u", TEXTS[0])],
            is_member=[True],
            references=refs,
            ref_membership=MEMBERSHIP[:1],
        )


def test_attack_input_errors():
    target, refs = _stubs(11)
    attack = LiraAttack()
    kw = {"is_member": [1, 0, 1, 0]}
    with pytest.raises(DpauditError, match="ref_membership"):
        attack.score(target, RECORDS, references=refs, **kw)
    with pytest.raises(DpauditError, match="reference model"):
        attack.score(target, RECORDS, ref_membership=MEMBERSHIP, **kw)
    with pytest.raises(DpauditError, match="shape"):
        attack.score(target, RECORDS, references=refs[:3], ref_membership=MEMBERSHIP, **kw)
    with pytest.raises(DpauditError, match="membership labels"):
        attack.score(target, RECORDS, is_member=[1, 0], references=refs, ref_membership=MEMBERSHIP)
    with pytest.raises(DpauditError, match="online"):
        LiraAttack(online="yes")  # type: ignore[arg-type]
    with pytest.raises(DpauditError, match="fixed_variance"):
        LiraAttack(fixed_variance=1)  # type: ignore[arg-type]
    assert isinstance(LiraAttack(), Attack) and isinstance(ClassifierLiraAttack(), Attack)


# -- tiny GPT-2 reference models -------------------------------------------------------------


@pytest.fixture(scope="module")
def setup():
    pytest.importorskip("torch")
    return shadow_setup()


@pytest.mark.parametrize("online", [True, False])
def test_lira_on_tiny_gpt2(setup, online):
    """K = 4 references (2 IN, 2 OUT per example); the target on another random half."""
    examples, member = list(setup.examples), setup.is_member
    lira = LiraAttack(online=online).score(
        setup.target(),
        examples,
        is_member=member,
        references=setup.references(),
        ref_membership=setup.ref_membership,
    )
    loss = LossAttack().score(setup.target(), examples, is_member=member)
    auc, loss_auc = roc_auc_score(member, lira.scores), roc_auc_score(member, loss.scores)
    assert auc > 0.8, (auc, loss_auc)
    assert auc > loss_auc - 0.05, (auc, loss_auc)


def test_lira_is_deterministic(setup):
    def run() -> np.ndarray:
        return (
            LiraAttack()
            .score(
                setup.target(),
                list(setup.examples),
                is_member=setup.is_member,
                references=setup.references(),
                ref_membership=setup.ref_membership,
            )
            .scores
        )

    np.testing.assert_array_equal(run(), run())


@pytest.mark.slow  # trains five classifiers (~6 s); the stub tests above cover the scoring
def test_classifier_lira_on_tiny_gpt2_classifiers():
    """Four-label classifiers memorising random labels; LiRA on the scaled logit."""
    pytest.importorskip("torch")
    clf = shadow_setup(steps=60, classifier=True)
    scores = ClassifierLiraAttack().score(
        clf.target(),
        list(clf.examples),
        is_member=clf.is_member,
        references=clf.references(),
        ref_membership=clf.ref_membership,
    )
    assert roc_auc_score(clf.is_member, scores.scores) > 0.8
