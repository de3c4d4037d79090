"""RMIA (Zarifzadeh et al. 2024): the log-space maths against a double loop in
probability space, γ monotonicity, uninformative models, and tiny GPT-2 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _shadow_models import StubModel, shadow_setup
from sklearn.metrics import roc_auc_score

from dpaudit.attacks.mia import Attack, _log_softmax
from dpaudit.attacks.rmia import ClassifierRmiaAttack, RmiaAttack, rmia_scores
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError


def slow_rmia(lx, rx, lz, rz, *, gamma=1.0, offline_a=None, ref_in=None) -> np.ndarray:
    """Score(x) = Pr_z[(p(x|θ)/Pr(x)) / (p(z|θ)/Pr(z)) ≥ γ], one pair at a time."""
    n, k = rx.shape

    def pr(row, outside):
        probs = [math.exp(row[j]) for j in range(k) if outside[j]]
        mean = sum(probs) / len(probs)
        return mean if offline_a is None else 0.5 * ((1 + offline_a) * mean + (1 - offline_a))

    everyone = [True] * k
    ratio_z = [math.exp(lz[j]) / pr(rz[j], everyone) for j in range(len(lz))]
    scores = []
    for i in range(n):
        outside = everyone if offline_a is None or ref_in is None else [not b for b in ref_in[i]]
        ratio_x = math.exp(lx[i]) / pr(rx[i], outside)
        scores.append(sum(ratio_x / rz_ >= gamma for rz_ in ratio_z) / len(ratio_z))
    return np.array(scores)


def _random_case(n: int = 30, m: int = 25, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    rx = -rng.uniform(0.2, 3, size=(n, k))
    lx = rx.mean(axis=1) + rng.normal(0, 0.4, size=n)
    rz = -rng.uniform(0.2, 3, size=(m, k))
    lz = rz.mean(axis=1) + rng.normal(0, 0.4, size=m)
    ref_in = rng.random((n, k)) < 0.5
    ref_in[np.arange(n), rng.integers(0, k, size=n)] = False  # at least one OUT each
    return np.minimum(lx, 0), rx, np.minimum(lz, 0), rz, ref_in


@pytest.mark.parametrize("gamma", [0.5, 1.0, 1.3, 2.0])
@pytest.mark.parametrize("offline_a", [None, 0.0, 0.3, 1.0])
def test_matches_slow_reference(gamma, offline_a):
    lx, rx, lz, rz, ref_in = _random_case()
    got = rmia_scores(lx, rx, lz, rz, gamma=gamma, offline_a=offline_a, ref_in=ref_in)
    want = slow_rmia(lx, rx, lz, rz, gamma=gamma, offline_a=offline_a, ref_in=ref_in)
    np.testing.assert_array_equal(got, want)
    assert got.min() >= 0 and got.max() <= 1


def test_offline_without_membership_means_all_out():
    lx, rx, lz, rz, _ = _random_case(seed=1)
    np.testing.assert_array_equal(
        rmia_scores(lx, rx, lz, rz, offline_a=0.3),
        slow_rmia(lx, rx, lz, rz, offline_a=0.3),
    )
    # a = 1 (IN behaves like OUT) with every reference OUT is the online estimate.
    np.testing.assert_array_equal(
        rmia_scores(lx, rx, lz, rz, offline_a=1.0), rmia_scores(lx, rx, lz, rz)
    )


def test_online_ignores_membership():
    lx, rx, lz, rz, ref_in = _random_case(seed=2)
    np.testing.assert_array_equal(
        rmia_scores(lx, rx, lz, rz, ref_in=ref_in), rmia_scores(lx, rx, lz, rz)
    )


def test_score_decreases_with_gamma():
    lx, rx, lz, rz, ref_in = _random_case(n=50, m=60, seed=3)
    gammas = [0.25, 0.5, 0.9, 1.0, 1.1, 2.0, 4.0]
    for offline_a in (None, 0.3):
        scores = np.array(
            [
                rmia_scores(lx, rx, lz, rz, gamma=g, offline_a=offline_a, ref_in=ref_in)
                for g in gammas
            ]
        )
        assert np.all(np.diff(scores, axis=0) <= 0)
        assert scores[0].sum() > scores[-1].sum()
    assert np.all(rmia_scores(lx, rx, lz, rz, gamma=1e-300) == 1)
    assert np.all(rmia_scores(lx, rx, lz, rz, gamma=1e300) == 0)


def test_uninformative_models_give_chance_auc():
    """Target, references and population all from one distribution, whatever the membership."""
    rng = np.random.default_rng(4)
    n, m, k = 2000, 400, 4

    def logp(*shape):
        return -rng.gamma(4.0, 0.5, size=shape)

    member = rng.random(n) < 0.5
    scores = rmia_scores(logp(n), logp(n, k), logp(m), logp(m, k))
    assert roc_auc_score(member, scores) == pytest.approx(0.5, abs=0.05)
    assert np.mean(scores[member]) == pytest.approx(np.mean(scores[~member]), abs=0.05)


def test_long_sequences_do_not_underflow():
    """Log-probabilities far below the float64 range still compare correctly."""
    lx = np.array([-2000.0, -2100.0])
    rx = np.array([[-2050.0, -2060.0], [-2050.0, -2060.0]])
    lz = np.array([-2055.0])
    rz = np.array([[-2050.0, -2060.0]])
    np.testing.assert_array_equal(rmia_scores(lx, rx, lz, rz), [1.0, 0.0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": -1.0}, "gamma"),
        ({"gamma": True}, "gamma"),
        ({"offline_a": 1.5}, "offline_a"),
        ({"offline_a": 0.3, "ref_in": np.ones((3, 2), dtype=bool)}, "OUT reference"),
        ({"offline_a": 0.3, "ref_in": np.ones((2, 2), dtype=bool)}, "shape"),
    ],
)
def test_rejects_bad_parameters(kwargs, match):
    lx, rx, lz, rz = (
        np.full(3, -1.0),
        np.full((3, 2), -1.0),
        np.full(4, -1.0),
        np.full((4, 2), -1.0),
    )
    with pytest.raises(DpauditError, match=match):
        rmia_scores(lx, rx, lz, rz, **kwargs)


def test_rejects_bad_arrays():
    lx, rx, lz, rz = (
        np.full(3, -1.0),
        np.full((3, 2), -1.0),
        np.full(4, -1.0),
        np.full((4, 2), -1.0),
    )
    with pytest.raises(DpauditError, match="not p"):
        rmia_scores(np.exp(lx), rx, lz, rz)
    with pytest.raises(DpauditError, match="finite"):
        rmia_scores(lx, rx, np.array([-1.0, np.nan, -1.0, -1.0]), rz)
    with pytest.raises(DpauditError, match="logp_z_refs"):
        rmia_scores(lx, rx, lz, rz[:, :1])
    with pytest.raises(DpauditError, match="population"):
        rmia_scores(lx, rx, np.zeros(0), np.zeros((0, 2)))


# -- the attack classes, on stub models ------------------------------------------------------

TEXTS = ("alpha beta", "gamma delta", "epsilon zeta", "eta theta")
POP = ("iota kappa", "lambda mu", "nu xi")
RECORDS = [Record(f"r{i}", t, label=i % 3) for i, t in enumerate(TEXTS)]
POPULATION = [Record(f"z{i}", t, label=(i + 1) % 3) for i, t in enumerate(POP)]


def _stubs(seed: int, k: int = 3) -> tuple[StubModel, list[StubModel]]:
    rng = np.random.default_rng(seed)

    def one() -> StubModel:
        return StubModel(
            logprobs={t: -rng.uniform(0.1, 4, size=rng.integers(1, 6)) for t in TEXTS + POP},
            logits={t: rng.normal(size=3) for t in TEXTS + POP},
        )

    return one(), [one() for _ in range(k)]


def test_lm_attack_is_rmia_on_mean_logprobs():
    target, refs = _stubs(5)

    def mean(model, texts):
        return np.array([np.mean(lp) for lp in model.token_logprobs(texts)])

    for gamma, offline_a in ((1.0, None), (1.05, 0.3)):
        result = RmiaAttack(gamma=gamma, offline_a=offline_a).score(
            target, RECORDS, is_member=[1, 0, 1, 0], references=refs, population=POPULATION
        )
        assert result.attack == "rmia"
        assert result.params == {"gamma": gamma, "offline_a": offline_a}
        want = rmia_scores(
            mean(target, TEXTS),
            np.column_stack([mean(r, TEXTS) for r in refs]),
            mean(target, POP),
            np.column_stack([mean(r, POP) for r in refs]),
            gamma=gamma,
            offline_a=offline_a,
        )
        np.testing.assert_array_equal(result.scores, want)


def test_classifier_attack_uses_true_label_probability():
    target, refs = _stubs(6)

    def logp(model, records):
        labels = [r.label for r in records]
        return _log_softmax(model.classify([r.text for r in records]))[
            np.arange(len(labels)), labels
        ]

    result = ClassifierRmiaAttack().score(
        target, RECORDS, is_member=[1, 0, 1, 0], references=refs, population=POPULATION
    )
    assert result.attack == "clf_rmia"
    want = rmia_scores(
        logp(target, RECORDS),
        np.column_stack([logp(r, RECORDS) for r in refs]),
        logp(target, POPULATION),
        np.column_stack([logp(r, POPULATION) for r in refs]),
    )
    np.testing.assert_array_equal(result.scores, want)


def test_attack_input_errors():
    target, refs = _stubs(7)
    kw = {"is_member": [1, 0, 1, 0]}
    with pytest.raises(DpauditError, match="population"):
        RmiaAttack().score(target, RECORDS, references=refs, **kw)
    with pytest.raises(DpauditError, match="reference model"):
        RmiaAttack().score(target, RECORDS, population=POPULATION, **kw)
    with pytest.raises(DpauditError, match="shape"):
        RmiaAttack(offline_a=0.3).score(
            target,
            RECORDS,
            references=refs,
            population=POPULATION,
            ref_membership=np.zeros((4, 2), dtype=bool),
            **kw,
        )
    with pytest.raises(DpauditError, match="membership labels"):
        RmiaAttack().score(target, RECORDS, is_member=[1], references=refs, population=POPULATION)
    with pytest.raises(DpauditError, match="gamma"):
        RmiaAttack(gamma=0)
    with pytest.raises(DpauditError, match="offline_a"):
        RmiaAttack(offline_a=-0.1)
    assert RmiaAttack(gamma=2, offline_a=1).params == {"gamma": 2.0, "offline_a": 1.0}
    assert isinstance(RmiaAttack(), Attack) and isinstance(ClassifierRmiaAttack(), Attack)


# -- tiny GPT-2 reference models -------------------------------------------------------------


@pytest.fixture(scope="module")
def setup():
    pytest.importorskip("torch")
    return shadow_setup()


def _rmia(setup, attack: RmiaAttack, references=None) -> np.ndarray:
    """Score the setup's examples; custom ``references`` come with no membership."""
    return attack.score(
        setup.target(),
        list(setup.examples),
        is_member=setup.is_member,
        references=setup.references() if references is None else references,
        population=list(setup.population),
        ref_membership=setup.ref_membership if references is None else None,
    ).scores


def test_rmia_on_tiny_gpt2(setup):
    """K = 4 references (2 IN, 2 OUT per example); 30 population texts no model saw."""
    auc = roc_auc_score(setup.is_member, _rmia(setup, RmiaAttack()))
    assert auc > 0.75, auc
    offline = roc_auc_score(setup.is_member, _rmia(setup, RmiaAttack(offline_a=0.3)))
    assert offline > 0.7, offline


def test_rmia_with_the_target_as_its_own_reference_is_uninformative(setup):
    """Every ratio is 1, so every score is 1 and members are indistinguishable."""
    scores = _rmia(setup, RmiaAttack(), references=[setup.target()])
    np.testing.assert_array_equal(scores, np.ones(len(setup.examples)))
    assert roc_auc_score(setup.is_member, scores) == 0.5


def test_rmia_is_deterministic(setup):
    np.testing.assert_array_equal(_rmia(setup, RmiaAttack()), _rmia(setup, RmiaAttack()))


@pytest.mark.slow  # trains five classifiers (~6 s); the stub tests above cover the scoring
def test_classifier_rmia_on_tiny_gpt2_classifiers():
    """Four-label classifiers memorising random labels; Pr(x | θ) = p(true label)."""
    pytest.importorskip("torch")
    clf = shadow_setup(steps=60, classifier=True)
    scores = ClassifierRmiaAttack().score(
        clf.target(),
        list(clf.examples),
        is_member=clf.is_member,
        references=clf.references(),
        population=list(clf.population),
    )
    assert roc_auc_score(clf.is_member, scores.scores) > 0.75
