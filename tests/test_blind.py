"""Tests for the model-free split validity check (dpaudit.attacks.blind)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dpaudit.attacks.blind import BlindBaselineResult, blind_baseline
from dpaudit.attacks.metrics import bootstrap_ci, mann_whitney_auc
from dpaudit.datasets.synth import synthesize
from dpaudit.errors import DpauditError


@pytest.fixture(scope="module")
def clinical() -> list[str]:
    return [r.text for r in synthesize("clinical", 600, 0)]


@pytest.fixture(scope="module")
def random_split(clinical) -> tuple[list[str], list[str]]:
    order = np.random.default_rng(0).permutation(len(clinical))
    return [clinical[i] for i in order[:300]], [clinical[i] for i in order[300:]]


def test_same_distribution_split_is_not_flagged(random_split):
    members, nonmembers = random_split
    result = blind_baseline(members, nonmembers, seed=0)
    assert result.auc_ci[0] <= 0.5 <= result.auc_ci[1]
    assert result.warning is None and not result.flagged
    assert (result.n_member, result.n_nonmember, result.folds) == (300, 300, 5)
    assert result.scores.shape == (600,)


def test_domain_shift_is_flagged(clinical):
    support = [r.text for r in synthesize("support", 300, 0)]
    result = blind_baseline(clinical[:300], support, seed=0)
    assert result.auc > 0.9
    assert result.flagged
    assert "distribution shift" in result.warning
    assert "Duan et al. 2024" in result.warning and "Das, Zhang & Tramèr 2024" in result.warning


def test_temporal_shift_is_flagged(clinical):
    # Same texts, only a year stamp differs: the blind classifier still finds it
    # (measured AUC about 0.85).
    members = [f"{t} 2024" for t in clinical[:300]]
    nonmembers = [f"{t} 2019" for t in clinical[300:]]
    result = blind_baseline(members, nonmembers, seed=0)
    assert result.auc > 0.75
    assert result.auc_ci[0] > 0.55 and result.flagged


def test_warn_above_is_a_parameter(clinical):
    support = [r.text for r in synthesize("support", 100, 1)]
    assert blind_baseline(clinical[:100], support, warn_above=1.0).warning is None


def test_deterministic_under_seed(random_split):
    members, nonmembers = random_split[0][:120], random_split[1][:120]
    a = blind_baseline(members, nonmembers, seed=7)
    b = blind_baseline(members, nonmembers, seed=7)
    c = blind_baseline(members, nonmembers, seed=8)
    assert a == b
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not np.array_equal(a.scores, c.scores)


def test_cv_correction_widens_the_plain_bootstrap(random_split):
    members, nonmembers = random_split[0][:150], random_split[1][:150]
    wide = blind_baseline(members, nonmembers, seed=1)
    plain = blind_baseline(members, nonmembers, seed=1, cv_correction=False)
    assert wide.auc == plain.auc
    assert wide.auc_ci[0] < plain.auc_ci[0] <= plain.auc <= plain.auc_ci[1] < wide.auc_ci[1]
    assert "Nadeau-Bengio" in wide.method and "Nadeau-Bengio" not in plain.method
    # Nadeau & Bengio 2003: the variance grows by 1 + K/(K-1), so the interval by its root
    factor = np.sqrt(1 + 5 / 4)
    assert wide.auc - wide.auc_ci[0] == pytest.approx(factor * (plain.auc - plain.auc_ci[0]))
    assert wide.auc_ci[1] - wide.auc == pytest.approx(factor * (plain.auc_ci[1] - plain.auc))


def test_auc_and_interval_are_the_shared_metrics(random_split):
    # The split check has no AUC or bootstrap of its own: it is metrics' on the out-of-fold scores.
    members, nonmembers = random_split[0][:80], random_split[1][:60]
    plain = blind_baseline(members, nonmembers, seed=3, bootstrap=120, cv_correction=False)
    is_member = np.r_[np.ones(80, bool), np.zeros(60, bool)]
    assert plain.auc == pytest.approx(roc_auc_score(is_member, plain.scores), abs=1e-12)
    assert plain.auc == float(mann_whitney_auc(plain.scores, is_member))
    shared = bootstrap_ci(mann_whitney_auc, plain.scores, is_member, n=120, seed=3, vectorized=True)
    assert plain.auc_ci == shared
    assert plain.auc_ci[0] < plain.auc < plain.auc_ci[1]


def test_tiny_inputs_reduce_folds():
    members = ["the cat sat on the mat", "a cat on a hat", "cats like mats"]
    nonmembers = ["dogs run in parks", "a dog in the fog", "the dog barked", "dog days"]
    result = blind_baseline(members, nonmembers, folds=5)
    assert result.folds == 3
    assert 0.0 <= result.auc_ci[0] <= result.auc <= result.auc_ci[1] <= 1.0
    assert "3-fold" in result.method


@pytest.mark.parametrize(
    ("members", "nonmembers", "kwargs", "message"),
    [
        (["only one"], ["a", "b"], {}, "at least 2 member"),
        (["a b", "c d"], ["e f", "g h"], {"folds": 1}, "folds must be >= 2"),
        (["a b", "c d"], ["e f", "g h"], {"bootstrap": 5}, "bootstrap must be >= 10"),
        (["a b", "c d"], ["e f", "g h"], {"confidence": 1.0}, "confidence"),
        (["", ""], ["", ""], {}, "could not featurise"),
    ],
)
def test_bad_input_raises_user_error(members, nonmembers, kwargs, message):
    with pytest.raises(DpauditError, match=message):
        blind_baseline(members, nonmembers, **kwargs)


def test_result_serialises_to_json(random_split):
    result = blind_baseline(random_split[0][:50], random_split[1][:50], bootstrap=50)
    assert isinstance(result, BlindBaselineResult)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["auc"] == result.auc and data["auc_ci"] == list(result.auc_ci)
    assert set(data) == {
        "auc",
        "auc_ci",
        "n_member",
        "n_nonmember",
        "folds",
        "confidence",
        "warning",
        "method",
    }


def test_user_groups_stop_the_classifier_learning_who_is_a_member():
    """Whole users on each side: ungrouped folds learn user names from the labels; grouped ones cannot."""
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(40)]
    texts, groups = [], []
    letters = list("abcdefghijklmnopqrstuvwxyz")
    for u in range(60):
        name = "".join(rng.choice(letters, 7))  # no n-gram shared by member users only
        for _ in range(6):
            texts.append(f"{name} " + " ".join(rng.choice(words, 8)))
            groups.append(f"u{u}")
    n = 30 * 6  # users 0-29 are members
    plain = blind_baseline(texts[:n], texts[n:], seed=0, bootstrap=50)
    grouped = blind_baseline(texts[:n], texts[n:], seed=0, bootstrap=50, groups=groups)
    assert plain.flagged and plain.auc > 0.9
    assert not grouped.flagged and abs(grouped.auc - 0.5) < 0.12
    assert "group (by user)" in grouped.method
    with pytest.raises(DpauditError, match="one group per text"):
        blind_baseline(texts[:n], texts[n:], groups=groups[:-1])


def test_progress_bar_names_each_phase_and_leaves_the_result_unchanged(random_split, capsys):
    # 20,000 + 20,000 texts take minutes: the phases (features, each fold, bootstrap) get a bar.
    members, nonmembers = random_split[0][:60], random_split[1][:60]
    quiet = blind_baseline(members, nonmembers, seed=3)
    shown = blind_baseline(members, nonmembers, seed=3, progress=True)
    err = capsys.readouterr().err
    assert "blind baseline (60+60 texts)" in err
    assert "TF-IDF features" in err and "fold 5/5" in err and "bootstrap (200)" in err
    assert "/7 [" in err  # features + 5 folds + bootstrap
    assert quiet == shown
