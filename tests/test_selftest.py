"""The self-test: broken DP-SGD variants are flagged, correct DP-SGD is not."""

from __future__ import annotations

import json
import math

import pytest

from dpaudit.audit.estimators import ESTIMATORS, get_estimator
from dpaudit.audit.gradient_canaries import gradient_canary_audits, gradient_canary_ceiling
from dpaudit.audit.selftest import (
    DEFAULT_VARIANTS,
    SELFTEST_FILE,
    SelftestSettings,
    run_selftest,
)
from dpaudit.audit.variants import (
    VARIANTS,
    CombinedHooks,
    Correct,
    MisreportedSamplingRate,
    NoClipping,
    NoNoise,
    make_variant,
)
from dpaudit.errors import DpauditError
from dpaudit.trainers.hooks import Mechanism, TrainHooks

CLAIM = Mechanism(sample_rate=0.05, noise_multiplier=1.5, max_grad_norm=0.5)
SMALL = SelftestSettings(n_records=40, vocab_size=300, steps=3)


# ----------------------------------------------------------------------------- variants
def test_variants_alter_only_what_they_name():
    assert Correct().mechanism(CLAIM) == CLAIM
    assert NoNoise().mechanism(CLAIM) == Mechanism(0.05, 0.0, 0.5)
    nc = NoClipping(clip_factor=1e4).mechanism(CLAIM)
    assert nc.sample_rate == 0.05 and nc.max_grad_norm == 5e3
    assert nc.noise_multiplier * nc.max_grad_norm == pytest.approx(1.5 * 0.5)  # same noise σ·C
    assert MisreportedSamplingRate().mechanism(CLAIM) == Mechanism(0.5, 1.5, 0.5)
    with pytest.raises(DpauditError, match="exceeds 1"):
        MisreportedSamplingRate(factor=30).mechanism(CLAIM)
    with pytest.raises(DpauditError):
        NoClipping(clip_factor=0.5)
    assert {v.expected_verdict for v in (NoNoise(), NoClipping(), MisreportedSamplingRate())} == {
        "violation"
    }
    assert Correct().expected_verdict == "consistent" and Correct().recipe_key is None
    assert set(DEFAULT_VARIANTS) == set(VARIANTS)


def test_registry_suggests_names():
    assert isinstance(make_variant("no-noise"), NoNoise)
    with pytest.raises(DpauditError, match="no-noise"):
        make_variant("no-nosie")


class _Recorder(TrainHooks):
    recipe_key = "recorder"

    def __init__(self):
        self.calls = []

    def on_per_sample_grads(self, *, step, params, example_ids):
        self.calls.append(("psg", step))

    def on_noisy_grads(self, *, step, params, expected_batch_size):
        self.calls.append(("noisy", step, expected_batch_size))

    def on_step_end(self, *, step, loss, model):
        self.calls.append(("end", step))


def test_combined_hooks_forward_and_compose():
    rec = _Recorder()
    both = CombinedHooks(rec, NoNoise())
    assert both.recipe_key == "recorder+variant:no-noise"
    assert both.wants_per_sample_grads and both.wants_noisy_grads
    assert not CombinedHooks(Correct(), NoNoise()).wants_per_sample_grads
    assert both.mechanism(CLAIM) == NoNoise().mechanism(CLAIM)
    both.on_per_sample_grads(step=0, params=[], example_ids=[])
    both.on_noisy_grads(step=0, params=[], expected_batch_size=3.0)
    both.on_step_end(step=1, loss=None, model=None)
    assert rec.calls == [("psg", 0), ("noisy", 0, 3.0), ("end", 1)]
    with pytest.raises(DpauditError, match="more than one"):
        CombinedHooks(NoNoise(), MisreportedSamplingRate()).mechanism(CLAIM)


# ----------------------------------------------------------------------------- self-test
def test_settings_default_to_full_batch_and_the_misreported_rate_claims_less():
    s = SelftestSettings()
    assert s.sample_rate == 1.0 and s.statistic == "sum"
    assert s.batch_size("correct", 700) == 700 and s.batch_size("no-noise", 700) == 700
    # claimed q = 70/700 = 0.1, applied 10 × 0.1 = 1
    assert s.rate_factor == 10.0 and s.batch_size("misreported-rate", 700) == 70
    assert s.batch_size("misreported-rate", 709) == 70  # floor: applied 700/709 <= 1
    with pytest.raises(DpauditError, match="statistic"):
        SelftestSettings(statistic="mean")
    with pytest.raises(DpauditError, match="sample_rate"):
        SelftestSettings(sample_rate=1.5)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("selftest")
    res = run_selftest(
        out_dir=out,
        seed=0,
        target_epsilon=1.0,
        n_canaries=200,
        progress=False,
        variants=("correct", "no-noise", "no-clipping"),
        settings=SMALL,
    )
    return out, res


def test_selftest_flags_broken_variants_fast(small):
    tmp_path, res = small
    rows = {r.variant: r for r in res.rows}
    assert rows["correct"].verdict == "consistent"
    assert rows["no-noise"].verdict == "violation"
    assert rows["no-clipping"].verdict == "violation"
    assert res.passed and all(r.ok for r in res.rows)
    for r in res.rows:
        assert r.claimed_epsilon == pytest.approx(1.0, abs=0.01)
        assert r.claimed["sample_rate"] == 1.0 and r.claimed["steps"] == 3.0
    assert (
        rows["correct"].epsilon_lb <= rows["correct"].claimed_epsilon < rows["no-noise"].epsilon_lb
    )
    assert rows["no-noise"].applied["noise_multiplier"] == 0.0
    # full batch without noise: 94 of the 200 canaries are in, each at exactly T·C, the rest at 0;
    # the best grid points are (40, 40) and (80, 0): r = 80, the largest r with every guess right
    nn = rows["no-noise"]
    assert (nn.n_correct, nn.n_guesses) == (80, 80)
    assert nn.epsilon_lb == get_estimator("steinke").epsilon(
        m=200, r=80, v=80, delta=1e-5, confidence=1 - 0.05 / 8
    )
    saved = json.loads((tmp_path / SELFTEST_FILE).read_text())
    assert saved["passed"] and [r["variant"] for r in saved["rows"]] == list(rows)
    for name in rows:
        assert not (tmp_path / name / "model.safetensors").exists()  # weights deleted
        assert (tmp_path / name / "privacy.json").is_file()
        canaries = json.loads((tmp_path / name / "gradient_canaries.json").read_text())
        assert len(canaries["scores"]) == 200 == len(canaries["included"])
        assert canaries["statistic"] == "sum"
        assert canaries["scores"] == canaries["sum"] != canaries["likelihood-ratio"]
        reported = set(canaries["bounds"]) | set(canaries["bound_errors"])
        assert reported == set(ESTIMATORS.names())
        assert set(canaries["bound_errors"]) == ({"gauss"} if name == "no-noise" else set())
        # q = 1 is claimed: the likelihood ratio ranks the canaries as the sum does (and is an
        # affine map of it, so gauss's t statistic is the same)
        inc = canaries["included"]
        names = list(canaries["bounds"])
        by_lr = gradient_canary_audits(
            canaries["likelihood-ratio"], inc, delta=1e-5, confidence=0.95, estimators=names
        )
        by_sum = gradient_canary_audits(
            canaries["sum"], inc, delta=1e-5, confidence=0.95, estimators=names
        )
        gauss_lr, gauss_sum = by_lr.pop("gauss", None), by_sum.pop("gauss", None)
        assert by_lr == by_sum
        if gauss_sum is not None:
            assert gauss_lr.epsilon == pytest.approx(gauss_sum.epsilon, rel=1e-9)


def test_every_estimator_is_reported_with_its_ceiling(small):
    tmp_path, res = small
    assert res.estimator == "steinke" and res.estimators[0] == "steinke"
    assert set(res.estimators) == set(ESTIMATORS.names())
    for r in res.rows:
        assert list(r.bounds) == list(res.estimators) and r.estimator == "steinke"
        for name, b in r.bounds.items():
            est = get_estimator(name)
            assert b.guarantee == est.guarantee
            if est.inputs == "scores":  # gauss: every canary's score, no ceiling, never a verdict
                assert b.ceiling is None and b.verdict is None
                if b.error:  # noise-free scores have no spread: no Gaussian fit, said so
                    assert r.variant == "no-noise" and b.epsilon_lb is None
                    assert "vary within each side" in b.error
                else:
                    assert b.n_guesses == 200 and b.epsilon_lb >= 0
                continue
            assert b.ceiling == gradient_canary_ceiling(
                200, delta=1e-5, confidence=0.95, estimator=name
            )
            assert 0.0 <= b.epsilon_lb <= b.ceiling
            if est.guarantee == "lower-bound":
                assert b.verdict == (
                    "violation" if b.epsilon_lb > r.claimed_epsilon else "consistent"
                )
            else:  # cannot decide a violation of an (epsilon, delta) claim
                assert b.verdict is None
        assert (
            r.bounds["steinke"].epsilon_lb == r.epsilon_lb
            and r.ceiling == r.bounds["steinke"].ceiling
        )
    table = res.table()
    assert "no-clipping" in table and "PASSED" in table and "fdp-gdp" in table
    nn = next(r for r in res.rows if r.variant == "no-noise")
    assert f"{nn.epsilon_lb:.2f}/{nn.ceiling:.2f}" in table


def test_selftest_cli_json(small, monkeypatch):
    from click.testing import CliRunner

    import dpaudit.audit.selftest as selftest_module
    from dpaudit.cli import cli

    _, res = small
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return res

    monkeypatch.setattr(selftest_module, "run_selftest", fake)
    out = CliRunner().invoke(
        cli,
        [
            "selftest",
            "--epsilon",
            "1",
            "--canaries",
            "200",
            "--estimator",
            "fdp-epsdelta",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    assert seen["target_epsilon"] == 1.0 and seen["n_canaries"] == 200
    assert seen["estimator"] == "fdp-epsdelta"
    data = json.loads(out.output)
    assert data["passed"] is True
    for row in data["rows"]:
        assert row["claimed_epsilon"] == pytest.approx(1.0, abs=0.01)
        assert row["verdict"] in ("consistent", "violation")
        for name in ESTIMATORS.names():
            b = row["bounds"][name]
            assert b["guarantee"]
            if name == "gauss":
                assert b["ceiling"] is None and (b["epsilon_lb"] is None) == bool(b["error"])
            else:
                assert b["epsilon_lb"] <= b["ceiling"]
    text = CliRunner().invoke(cli, ["selftest", "--epsilon", "1", "--canaries", "200"])
    assert text.exit_code == 0 and "PASSED" in text.output


def test_selftest_rerun_replaces_its_own_outputs(small):
    tmp_path, first = small
    again = run_selftest(
        out_dir=tmp_path,
        n_canaries=200,
        target_epsilon=1.0,
        progress=False,
        variants=("no-noise",),
        settings=SMALL,
        estimators=("steinke",),
    )
    before = next(r for r in first.rows if r.variant == "no-noise")
    assert again.rows[0].epsilon_lb == before.epsilon_lb and again.estimators == ("steinke",)


def test_claim_above_the_ceiling_is_inconclusive_not_consistent(tmp_path):
    res = run_selftest(
        out_dir=tmp_path,
        target_epsilon=8.0,
        n_canaries=200,
        progress=False,
        variants=("correct",),
        settings=SMALL,
        estimators=("steinke",),
    )
    (row,) = res.rows
    ceiling = gradient_canary_ceiling(200, delta=1e-5, confidence=0.95)
    assert row.ceiling == ceiling < row.claimed_epsilon == pytest.approx(8.0, abs=0.01)
    assert row.verdict == "inconclusive" and not row.ok and not res.passed
    assert "expected consistent, got inconclusive" in res.to_dict()["failures"]["correct"]
    assert "not as expected: correct" in res.table()
    assert row.bounds["steinke"].verdict == "consistent"  # ε_lb alone does not contradict the claim
    saved = json.loads((tmp_path / "correct" / "gradient_canaries.json").read_text())
    assert saved["verdict"]["verdict"] == "inconclusive" and saved["verdict"]["reasons"]


def test_selftest_refuses_foreign_directories_and_unknown_variants(tmp_path):
    (tmp_path / "correct").mkdir()
    (tmp_path / "correct" / "mine.txt").write_text("keep me")
    with pytest.raises(DpauditError, match="not a self-test output"):
        run_selftest(out_dir=tmp_path, progress=False, variants=("correct",), settings=SMALL)
    with pytest.raises(DpauditError, match="unknown DP-SGD variant"):
        run_selftest(out_dir=tmp_path, progress=False, variants=("no-clip",), settings=SMALL)
    with pytest.raises(DpauditError, match="not a lower bound"):
        run_selftest(out_dir=tmp_path / "x", progress=False, settings=SMALL, estimator="fdp-gdp")
    with pytest.raises(DpauditError, match="unknown one-run estimator"):
        run_selftest(out_dir=tmp_path / "x", progress=False, settings=SMALL, estimators=["stenke"])
    # Broken variants that no outcome could call a violation: refused before any training.
    with pytest.raises(
        DpauditError, match=r"at most ε = 3.64 .* use --canaries 1000 \(ceiling 5.19\)"
    ):
        run_selftest(
            out_dir=tmp_path / "x",
            progress=False,
            settings=SMALL,
            target_epsilon=4.0,
            n_canaries=200,
        )
    with pytest.raises(DpauditError, match="no canary count reaches it"):
        run_selftest(
            out_dir=tmp_path / "x",
            progress=False,
            settings=SMALL,
            target_epsilon=8.0,
            n_canaries=200,
        )
    assert not (tmp_path / "x").exists()
    assert (tmp_path / "correct" / "mine.txt").read_text() == "keep me"


@pytest.mark.slow
def test_full_selftest_passes(tmp_path):
    res = run_selftest(out_dir=tmp_path, progress=False)
    print(res.table())
    assert res.passed, res.table()
    assert [r.variant for r in res.rows] == list(DEFAULT_VARIANTS)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])  # seed 0: test_full_selftest_passes
def test_correct_dp_sgd_is_never_a_violation(tmp_path, seed):
    res = run_selftest(out_dir=tmp_path, seed=seed, progress=False, variants=("correct",))
    (row,) = res.rows
    assert math.isfinite(row.claimed_epsilon)
    assert row.epsilon_lb <= row.claimed_epsilon and row.verdict == "consistent"


def test_a_ceiling_close_to_the_claim_is_warned_about(caplog):
    """ε = 4 with 500 canaries (ceiling 4.54): allowed, but a broken variant may not be flagged."""
    from dpaudit.audit.selftest import SelftestSettings, _check_power

    with caplog.at_level("WARNING"):
        _check_power(500, 4.0, SelftestSettings(), "steinke")
    assert "only 0.54 above the claimed ε = 4" in caplog.text and "--canaries 1000" in caplog.text
    caplog.clear()
    _check_power(1000, 4.0, SelftestSettings(), "steinke")  # 5.19: room for a few wrong guesses
    assert not caplog.text
