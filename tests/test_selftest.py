"""The self-test: broken DP-SGD variants are flagged, correct DP-SGD is not."""

from __future__ import annotations

import json
import math

import pytest

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
SMALL = SelftestSettings(n_records=40, vocab_size=300, sample_rate=0.1, steps=20)


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
def test_selftest_flags_broken_variants_fast(tmp_path):
    res = run_selftest(
        out_dir=tmp_path,
        seed=0,
        target_epsilon=1.0,
        n_canaries=200,
        progress=False,
        variants=("correct", "no-noise", "no-clipping"),
        settings=SMALL,
    )
    rows = {r.variant: r for r in res.rows}
    assert rows["correct"].verdict == "consistent"
    assert rows["no-noise"].verdict == "violation"
    assert rows["no-clipping"].verdict == "violation"
    assert res.passed and all(r.ok for r in res.rows)
    for r in res.rows:
        assert r.claimed_epsilon == pytest.approx(1.0, abs=0.01)
    assert (
        rows["correct"].epsilon_lb <= rows["correct"].claimed_epsilon < rows["no-noise"].epsilon_lb
    )
    assert rows["no-noise"].applied["noise_multiplier"] == 0.0
    table = res.table()
    assert "no-clipping" in table and "PASSED" in table
    saved = json.loads((tmp_path / SELFTEST_FILE).read_text())
    assert saved["passed"] and [r["variant"] for r in saved["rows"]] == list(rows)
    for name in rows:
        assert not (tmp_path / name / "model.safetensors").exists()  # weights deleted
        assert (tmp_path / name / "privacy.json").is_file()
        canaries = json.loads((tmp_path / name / "gradient_canaries.json").read_text())
        assert len(canaries["statistic"]) == 200 == len(canaries["included"])
    # a second self-test into the same directory replaces its own outputs
    again = run_selftest(
        out_dir=tmp_path,
        n_canaries=200,
        target_epsilon=1.0,
        progress=False,
        variants=("no-noise",),
        settings=SMALL,
    )
    assert again.rows[0].epsilon_lb == rows["no-noise"].epsilon_lb


def test_selftest_refuses_foreign_directories_and_unknown_variants(tmp_path):
    (tmp_path / "correct").mkdir()
    (tmp_path / "correct" / "mine.txt").write_text("keep me")
    with pytest.raises(DpauditError, match="not a self-test output"):
        run_selftest(out_dir=tmp_path, progress=False, variants=("correct",), settings=SMALL)
    with pytest.raises(DpauditError, match="unknown DP-SGD variant"):
        run_selftest(out_dir=tmp_path, progress=False, variants=("no-clip",), settings=SMALL)
    assert (tmp_path / "correct" / "mine.txt").read_text() == "keep me"


@pytest.mark.slow
def test_full_selftest_passes(tmp_path):
    res = run_selftest(out_dir=tmp_path, progress=False)
    print(res.table())
    assert res.passed, res.table()
    assert [r.variant for r in res.rows] == list(DEFAULT_VARIANTS)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_correct_dp_sgd_is_never_a_violation(tmp_path, seed):
    res = run_selftest(out_dir=tmp_path, seed=seed, progress=False, variants=("correct",))
    (row,) = res.rows
    assert math.isfinite(row.claimed_epsilon)
    assert row.epsilon_lb <= row.claimed_epsilon and row.verdict == "consistent"
