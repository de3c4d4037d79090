"""ROC metrics against brute-force threshold sweeps, and the AttackScores/Metrics values."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score, roc_curve

from dpaudit.atomic import read_json
from dpaudit.attacks.metrics import (
    auc,
    balanced_accuracy,
    bootstrap_ci,
    bootstrap_samples,
    compute_metrics,
    percentile_interval,
    roc_curve_points,
    tpr_at_fpr,
)
from dpaudit.attacks.metrics import (
    mann_whitney_auc as vectorised_auc,
)
from dpaudit.attacks.scores import AttackMetrics, AttackScores
from dpaudit.errors import DpauditError, InputError

# ---------------------------------------------------------------- references


def sweep(scores, is_member):
    """Brute force: (FPR, TPR) of 'member iff score >= t' for every unique t and +inf."""
    s = np.asarray(scores, dtype=float)
    m = np.asarray(is_member, dtype=bool)
    n1, n0 = m.sum(), (~m).sum()
    points = []
    for t in [math.inf, *np.unique(s)]:
        pred = s >= t
        points.append((np.sum(pred & ~m) / n0, np.sum(pred & m) / n1))
    return points


def brute_tpr_at_fpr(scores, is_member, target):
    return max(tpr for fpr, tpr in sweep(scores, is_member) if fpr <= target)


def brute_balanced_accuracy(scores, is_member):
    return max((tpr + 1 - fpr) / 2 for fpr, tpr in sweep(scores, is_member))


def mann_whitney_auc(scores, is_member):
    """U / (n1 * n0) by a double loop, ties counted 1/2."""
    members = [s for s, m in zip(scores, is_member, strict=True) if m]
    others = [s for s, m in zip(scores, is_member, strict=True) if not m]
    u = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in members for b in others)
    return u / (len(members) * len(others))


@st.composite
def labelled_scores(draw, tie_heavy: bool | None = None):
    """Scores with both classes present; tie-heavy draws use a handful of values."""
    n = draw(st.integers(2, 60))
    member = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    member[0], member[1] = True, False
    heavy = draw(st.booleans()) if tie_heavy is None else tie_heavy
    values = (
        st.integers(0, 3).map(float)
        if heavy
        else st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
    )
    scores = draw(st.lists(values, min_size=n, max_size=n))
    return np.array(scores), np.array(member)


fpr_targets = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 1.0]))

# ------------------------------------------------------------------- metrics


class TestAuc:
    @settings(max_examples=200, deadline=None)
    @given(data=labelled_scores())
    def test_equals_mann_whitney_by_hand(self, data):
        scores, member = data
        assert auc(scores, member) == pytest.approx(mann_whitney_auc(scores, member), abs=1e-12)

    def test_equals_scipy_mann_whitney(self):
        rng = np.random.default_rng(0)
        scores = rng.integers(0, 20, 500).astype(float)  # many ties
        member = rng.random(500) < 0.4
        u = mannwhitneyu(scores[member], scores[~member]).statistic
        assert auc(scores, member) == pytest.approx(u / (member.sum() * (~member).sum()))

    @settings(max_examples=100, deadline=None)
    @given(data=labelled_scores())
    def test_flipping_scores_gives_one_minus_auc(self, data):
        scores, member = data
        assert auc(-scores, member) == pytest.approx(1 - auc(scores, member), abs=1e-12)

    def test_single_class_is_refused(self):
        with pytest.raises(DpauditError, match="members and non-members"):
            auc([1.0, 2.0], [True, True])

    @settings(max_examples=100, deadline=None)
    @given(data=labelled_scores(tie_heavy=True))
    def test_equals_sklearn_with_ties(self, data):
        scores, member = data
        assert auc(scores, member) == pytest.approx(roc_auc_score(member, scores), abs=1e-12)

    def test_vectorised_over_leading_axes(self):
        rng = np.random.default_rng(2)
        scores = rng.integers(0, 5, size=(4, 3, 24)).astype(float)
        member = rng.random((4, 3, 24)) < 0.5
        member[..., 0], member[..., 1] = True, False
        batched = vectorised_auc(scores, member)
        assert batched.shape == (4, 3)
        for i in range(4):
            for j in range(3):
                assert batched[i, j] == pytest.approx(auc(scores[i, j], member[i, j]), abs=1e-12)
        # one membership vector broadcasts over every row
        assert vectorised_auc(scores[0], member[0, 0])[1] == pytest.approx(
            auc(scores[0, 1], member[0, 0]), abs=1e-12
        )
        assert np.isnan(vectorised_auc([1.0, 2.0], [True, True]))  # unvalidated: one class


class TestTprAtFpr:
    @settings(max_examples=300, deadline=None)
    @given(data=labelled_scores(), target=fpr_targets)
    def test_matches_threshold_sweep(self, data, target):
        scores, member = data
        fpr, tpr, _ = roc_curve_points(scores, member)
        assert tpr_at_fpr(fpr, tpr, target) == pytest.approx(
            brute_tpr_at_fpr(scores, member, target), abs=1e-12
        )

    @settings(max_examples=100, deadline=None)
    @given(data=labelled_scores(tie_heavy=True), target=fpr_targets)
    def test_matches_threshold_sweep_with_ties(self, data, target):
        scores, member = data
        fpr, tpr, _ = roc_curve_points(scores, member)
        assert tpr_at_fpr(fpr, tpr, target) == pytest.approx(
            brute_tpr_at_fpr(scores, member, target), abs=1e-12
        )

    def test_largest_tpr_not_first_point_above_nor_interpolated(self):
        fpr = np.array([0.0, 0.1, 0.1, 0.2, 1.0])
        tpr = np.array([0.0, 0.3, 0.5, 0.9, 1.0])
        assert tpr_at_fpr(fpr, tpr, 0.15) == 0.5
        assert tpr_at_fpr(fpr, tpr, 0.1) == 0.5
        assert tpr_at_fpr(fpr, tpr, 0.05) == 0.0

    def test_keeps_collinear_points(self):
        # Each score is shared by one member and one non-member: the ROC is a
        # diagonal of collinear points, whose inner vertices scikit-learn drops
        # by default, leaving only (0, 0) below FPR 0.25.
        scores = np.repeat(np.arange(10.0), 2)
        member = np.arange(20) % 2 == 0
        fpr, tpr, _ = roc_curve_points(scores, member)
        assert tpr_at_fpr(fpr, tpr, 0.25) == pytest.approx(brute_tpr_at_fpr(scores, member, 0.25))
        f_drop, t_drop, _ = roc_curve(member, scores)  # drop_intermediate=True
        assert tpr_at_fpr(f_drop, t_drop, 0.25) < tpr_at_fpr(fpr, tpr, 0.25)

    def test_roc_points_include_corners(self):
        fpr, tpr, thresholds = roc_curve_points([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
        assert np.isinf(thresholds[0])
        assert len(fpr) == 5

    def test_rejects_bad_target(self):
        with pytest.raises(DpauditError, match=r"\[0, 1\]"):
            tpr_at_fpr([0.0, 1.0], [0.0, 1.0], 1.5)


class TestBalancedAccuracy:
    @settings(max_examples=200, deadline=None)
    @given(data=labelled_scores())
    def test_matches_threshold_sweep(self, data):
        scores, member = data
        assert balanced_accuracy(scores, member) == pytest.approx(
            brute_balanced_accuracy(scores, member), abs=1e-12
        )

    def test_useless_attack_still_scores_at_least_half(self):
        # In-sample optimism: constant scores carry no information.
        assert balanced_accuracy(np.zeros(10), np.arange(10) < 5) == 0.5


class TestPerfectAndRandom:
    def test_perfect_separation(self):
        member = np.arange(100) < 40
        scores = member.astype(float) + np.random.default_rng(0).random(100) * 0.5
        m = compute_metrics(AttackScores("x", {}, tuple(map(str, range(100))), scores, member))
        assert m.auc == 1.0 and m.balanced_accuracy == 1.0
        fpr, tpr, _ = roc_curve_points(scores, member)
        for target in (0.0, 1e-6, 0.001, 0.5):
            assert tpr_at_fpr(fpr, tpr, target) == 1.0
        assert all(v[0] == 1.0 and v[1] == (1.0, 1.0) for v in m.tpr_at_fpr.values())

    def test_random_scores_auc_half_with_covering_ci(self):
        rng = np.random.default_rng(1)
        n = 4000
        member = rng.random(n) < 0.5
        s = AttackScores("x", {}, tuple(map(str, range(n))), rng.normal(size=n), member)
        m = compute_metrics(s, bootstrap=200, seed=3)
        assert abs(m.auc - 0.5) < 0.03
        assert m.auc_ci[0] < 0.5 < m.auc_ci[1]
        assert m.auc_ci[1] - m.auc_ci[0] < 0.08


class TestBootstrap:
    data = (
        np.random.default_rng(2).normal(size=300) + (np.arange(300) < 100),
        np.arange(300) < 100,
    )

    def test_contains_point_estimate(self):
        lo, hi = bootstrap_ci(auc, *self.data, n=200, seed=0)
        assert lo < auc(*self.data) < hi

    def test_deterministic_under_seed(self):
        a = bootstrap_ci(auc, *self.data, n=50, seed=7)
        assert a == bootstrap_ci(auc, *self.data, n=50, seed=7)
        assert a != bootstrap_ci(auc, *self.data, n=50, seed=8)

    def test_stratified(self):
        def counts(s, m):
            return np.array([m.sum(), (~m).sum(), len(np.unique(s))])

        samples = bootstrap_samples(counts, *self.data, n=30, seed=0)
        assert samples.shape == (30, 3)
        assert np.all(samples[:, 0] == 100) and np.all(samples[:, 1] == 200)
        assert np.all(samples[:, 2] < 300)  # with replacement: duplicates appear

    def test_vectorised_statistic_sees_the_same_resamples(self):
        # 120 resamples cross the batch boundary (50 per call)
        loop = bootstrap_samples(auc, *self.data, n=120, seed=5)
        batched = bootstrap_samples(vectorised_auc, *self.data, n=120, seed=5, vectorized=True)
        assert batched.shape == (120,)
        np.testing.assert_allclose(batched, loop, rtol=0, atol=1e-12)
        assert bootstrap_ci(vectorised_auc, *self.data, n=120, seed=5, vectorized=True) == (
            pytest.approx(bootstrap_ci(auc, *self.data, n=120, seed=5)[0], abs=1e-12),
            pytest.approx(bootstrap_ci(auc, *self.data, n=120, seed=5)[1], abs=1e-12),
        )

    def test_wider_at_higher_level(self):
        lo90, hi90 = bootstrap_ci(auc, *self.data, n=200, seed=0, level=0.9)
        lo99, hi99 = bootstrap_ci(auc, *self.data, n=200, seed=0, level=0.99)
        assert lo99 <= lo90 and hi90 <= hi99 and (hi99 - lo99) > (hi90 - lo90)

    def test_percentile_interval_against_numpy_quantiles(self):
        x = np.arange(101.0)
        assert percentile_interval(x, 0.9) == (pytest.approx(5.0), pytest.approx(95.0))
        with pytest.raises(DpauditError):
            percentile_interval(x, 1.0)


class TestComputeMetrics:
    def scores(self, n=400, seed=0):
        rng = np.random.default_rng(seed)
        member = rng.random(n) < 0.3
        return AttackScores(
            "loss",
            {"k": 1},
            tuple(f"ex-{i}" for i in range(n)),
            rng.normal(size=n) + member,
            member,
        )

    def test_consistent_with_pure_functions(self):
        s = self.scores()
        m = compute_metrics(s, fprs=(0.01, 0.1), bootstrap=50, seed=1)
        assert m.auc == pytest.approx(mann_whitney_auc(s.scores, s.is_member))
        assert m.balanced_accuracy == pytest.approx(brute_balanced_accuracy(s.scores, s.is_member))
        for f in (0.01, 0.1):
            assert m.tpr_at_fpr[f][0] == pytest.approx(brute_tpr_at_fpr(s.scores, s.is_member, f))
        assert (m.n_member, m.n_nonmember) == (s.n_member, s.n_nonmember)
        assert m.auc_ci == bootstrap_ci(auc, s.scores, s.is_member, n=50, seed=1)
        assert m.n_bootstrap == 50 and m.seed == 1
        np.testing.assert_array_equal(m.roc["fpr"], roc_curve_points(s.scores, s.is_member)[0])

    def test_no_bootstrap_gives_nan_intervals(self):
        m = compute_metrics(self.scores(), bootstrap=0)
        assert all(math.isnan(v) for v in m.auc_ci)

    def test_dict_and_file_round_trip(self, tmp_path):
        m = compute_metrics(self.scores(), bootstrap=20)
        back = AttackMetrics.from_dict(m.to_dict())
        assert back.to_dict() == m.to_dict()
        assert list(m.to_dict()["tpr_at_fpr"]) == ["0.001", "0.01", "0.1"]
        m.save(tmp_path)
        assert read_json(tmp_path / "metrics.json")["schema_version"] == "1.0"
        assert AttackMetrics.load(tmp_path).to_dict() == m.to_dict()
        nan_metrics = compute_metrics(self.scores(), bootstrap=0)
        nan_metrics.save(tmp_path / "b")
        assert math.isnan(AttackMetrics.load(tmp_path / "b").auc_ci[0])


# -------------------------------------------------------------- AttackScores


def make(n=5, **kw):
    fields = dict(
        attack="loss",
        params={"k": 0.2},
        example_ids=tuple(f"id{i}" for i in range(n)),
        scores=np.linspace(0, 1, n),
        is_member=np.arange(n) % 2 == 0,
    )
    fields.update(kw)
    return AttackScores(**fields)


class TestAttackScores:
    def test_validation(self):
        with pytest.raises(DpauditError, match="equal lengths"):
            make(scores=np.zeros(4))
        with pytest.raises(DpauditError, match="non-finite scores for id1"):
            make(scores=np.array([0.0, np.nan, 1.0, 2.0, 3.0]))
        with pytest.raises(DpauditError, match="repeated example ids"):
            make(example_ids=("a", "a", "b", "c", "d"))
        with pytest.raises(DpauditError, match="booleans"):
            make(is_member=np.array([0, 1, 2, 0, 1]))
        with pytest.raises(DpauditError, match="serialisable"):
            make(params={"f": object()})

    def test_immutable_and_coerced(self):
        s = make(is_member=[1, 0, 1, 0, 0])
        assert s.is_member.dtype == bool and s.n_member == 2 and s.n_nonmember == 3
        with pytest.raises(ValueError):
            s.scores[0] = 5.0
        with pytest.raises(AttributeError):
            s.attack = "other"

    def test_parquet_round_trip(self, tmp_path):
        s = make(scores=np.array([0.1, -2.5, 1e-300, 3.0, 7.0]))
        path = s.save(tmp_path / "attacks" / "loss")
        assert path.name == "scores.parquet"
        assert pq.read_table(path).column_names == ["id", "is_member", "score"]
        assert [p.name for p in path.parent.iterdir()] == ["scores.parquet"]  # no temp left
        back = AttackScores.load(path.parent)
        assert back == s and back.params == {"k": 0.2}
        np.testing.assert_array_equal(back.scores, s.scores)

    def test_load_errors(self, tmp_path):
        with pytest.raises(InputError, match="not found"):
            AttackScores.load(tmp_path)
        import pyarrow as pa

        pq.write_table(
            pa.table({"id": ["a"], "is_member": [True], "score": [1.0]}),
            tmp_path / "scores.parquet",
        )
        with pytest.raises(InputError, match="no dpaudit metadata"):
            AttackScores.load(tmp_path)
        (tmp_path / "scores.parquet").write_text("garbage")
        with pytest.raises(InputError, match="parquet"):
            AttackScores.load(tmp_path)
