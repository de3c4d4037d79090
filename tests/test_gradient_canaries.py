"""White-box gradient canaries: injection, the noisy-update statistic, and the audit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dpaudit.audit.estimators import ESTIMATORS, estimator_names, get_estimator
from dpaudit.audit.gradient_canaries import (
    CanarySlots,
    GradientCanaries,
    GradientCanaryHooks,
    gradient_canary_audit,
    gradient_canary_audits,
    gradient_canary_ceiling,
    gradient_canary_grid,
    gradient_canary_ids,
    plant_gradient_canaries,
    position_canary_slots,
    step_log_likelihood_ratio,
)
from dpaudit.audit.lower_bound import audit_one_run
from dpaudit.audit.one_run import one_run_epsilon_lower_bound
from dpaudit.audit.variants import CombinedHooks, Correct, MisreportedSamplingRate, NoClipping
from dpaudit.config import TrainConfig
from dpaudit.errors import DpauditError
from dpaudit.trainers.hooks import Mechanism, TrainHooks

MAX_LENGTH = 16


# ----------------------------------------------------------------------------- pure parts
def test_ids_and_coins():
    assert gradient_canary_ids(3) == ("gcanary-0000", "gcanary-0001", "gcanary-0002")
    assert gradient_canary_ids(12000)[-1] == "gcanary-11999"
    a, b = plant_gradient_canaries(2000, seed=1), plant_gradient_canaries(2000, seed=1)
    assert a == b and a != plant_gradient_canaries(2000, seed=2)
    assert 900 < sum(a.included) < 1100
    recs = a.records()
    assert [r.id for r in recs] == [c for c, inc in zip(a.ids, a.included, strict=True) if inc]
    with pytest.raises(DpauditError):
        GradientCanaries(("a", "a"), (True, False))


def test_slots_validation_and_grid():
    with pytest.raises(DpauditError, match="distinct"):
        CanarySlots("w", 0, (4, 4), (1, 1))
    with pytest.raises(DpauditError, match="lie in"):
        CanarySlots("w", 0, (4, 4), (16,))
    assert gradient_canary_grid(1000) == (
        (25, 25),
        (50, 50),
        (100, 100),
        (200, 200),
        (500, 500),
        (100, 0),
        (200, 0),
        (400, 0),
    )
    assert max(kp + km for kp, km in gradient_canary_grid(1000)) == 1000  # up to r = m
    assert gradient_canary_grid(101)[4] == (51, 50)
    assert gradient_canary_grid(4) == ((1, 0), (2, 2))
    with pytest.raises(DpauditError):
        gradient_canary_grid(1)


def test_ceiling_is_the_estimators_at_r_equal_m_and_the_union_bound():
    # 8 grid points: each at beta/8; the largest ceiling is the r = m point.
    per = 1 - 0.05 / 8
    steinke = gradient_canary_ceiling(1000, delta=1e-5, confidence=0.95)
    assert steinke == get_estimator("steinke").ceiling(m=1000, r=1000, delta=1e-5, confidence=per)
    assert steinke == one_run_epsilon_lower_bound(
        m=1000, r=1000, v=1000, delta=1e-5, confidence=per
    )
    assert steinke == pytest.approx(5.19422, abs=1e-4)
    # a single pre-registered r = m would reach 5.7823; the grid pays log(8) in beta
    single = gradient_canary_ceiling(1000, delta=1e-5, confidence=0.95, grid=[(500, 500)])
    assert single == pytest.approx(5.7823, abs=1e-4) and single - steinke > 0.5
    for name in estimator_names(scores=False):
        c = gradient_canary_ceiling(1000, delta=1e-5, confidence=0.95, estimator=name)
        assert c == get_estimator(name).ceiling(m=1000, r=1000, delta=1e-5, confidence=per)


def test_audit_is_the_one_run_audit_on_the_grid():
    rng = np.random.default_rng(0)
    inc = rng.random(500) < 0.5
    scores = 2.0 * inc + rng.normal(size=500)
    got = gradient_canary_audit(scores, inc, delta=1e-5, confidence=0.95)
    want = audit_one_run(scores, inc, delta=1e-5, confidence=0.95, grid=gradient_canary_grid(500))
    assert got == want and got.method == "one-run" and got.epsilon > 0
    assert got.ceiling == gradient_canary_ceiling(500, delta=1e-5, confidence=0.95)
    every = gradient_canary_audits(scores, inc, delta=1e-5, confidence=0.95)
    assert tuple(every) == ESTIMATORS.names() and every["steinke"] == got
    for name, bound in every.items():
        assert bound.estimator == name
        assert bound.epsilon <= bound.ceiling if name != "gauss" else bound.ceiling is None
        assert bound.guarantee == get_estimator(name).guarantee
    assert gradient_canary_audits(
        scores, inc, delta=1e-5, confidence=0.95, estimators=["steinke"]
    ) == {"steinke": got}


# ----------------------------------------------------------------------------- the statistic
def test_step_log_likelihood_ratio_is_the_mixture_ratio():
    q, sigma = 0.2, 0.7
    x = np.array([-1.0, 0.0, 0.5, 1.0, 3.0])

    def phi(z):  # the N(0, sigma^2) density up to its constant factor, which cancels
        return np.exp(-(z**2) / (2 * sigma**2))

    want = np.log(((1 - q) * phi(x) + q * phi(x - 1.0)) / phi(x))
    got = step_log_likelihood_ratio(x, sample_rate=q, noise_multiplier=sigma)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # q = 1: the Gaussian log-ratio (x - 1/2)/sigma^2, affine in x
    np.testing.assert_allclose(
        step_log_likelihood_ratio(x, sample_rate=1.0, noise_multiplier=sigma),
        (x - 0.5) / sigma**2,
        rtol=1e-12,
    )
    # no overflow for an unclipped canary (x = 1e4 C), no precision loss for tiny q
    big = step_log_likelihood_ratio(1e4, sample_rate=1e-6, noise_multiplier=0.5)
    assert big == pytest.approx(math.log(1e-6) + (1e4 - 0.5) / 0.25, rel=1e-12)
    tiny = step_log_likelihood_ratio(0.0, sample_rate=1e-12, noise_multiplier=1.0)
    assert tiny == pytest.approx(math.log1p(-1e-12 + 1e-12 * math.exp(-0.5)), rel=1e-6)
    with pytest.raises(DpauditError, match="sample rate"):
        step_log_likelihood_ratio(x, sample_rate=0.0, noise_multiplier=1.0)
    with pytest.raises(DpauditError, match="noise multiplier"):
        step_log_likelihood_ratio(x, sample_rate=0.5, noise_multiplier=0.0)


def _simulated(m, *, q, sigma, steps, seed):
    """Coins and per-step canary coordinates (units of C) of Poisson-subsampled Gaussian DP-SGD."""
    rng = np.random.default_rng(seed)
    inc = rng.random(m) < 0.5
    drawn = (rng.random((m, steps)) < q) & inc[:, None]
    return inc, drawn + sigma * rng.normal(size=(m, steps))


def _llr(x, *, q, sigma):
    return step_log_likelihood_ratio(x, sample_rate=q, noise_multiplier=sigma).sum(axis=1)


def test_likelihood_ratio_beats_the_sum_on_subsampled_gaussian():
    # sigma = 0.82: PLD-calibrated to epsilon = 4 (delta = 1e-5) at q = 0.05, T = 40 (0.81)
    q, sigma, steps = 0.05, 0.82, 40
    inc, x = _simulated(1000, q=q, sigma=sigma, steps=steps, seed=1)
    by_sum = gradient_canary_audit(x.sum(axis=1), inc, delta=1e-5, confidence=0.95)
    by_llr = gradient_canary_audit(_llr(x, q=q, sigma=sigma), inc, delta=1e-5, confidence=0.95)
    assert by_sum.epsilon == pytest.approx(0.507, abs=1e-3)
    assert by_llr.epsilon == pytest.approx(1.094, abs=1e-3)
    assert by_llr.n_correct / by_llr.n_guesses > by_sum.n_correct / by_sum.n_guesses


def test_scores_depend_on_the_released_updates_only_never_on_the_coins():
    import torch

    q, sigma, steps, m = 0.05, 0.8, 20, 300
    inc, x = _simulated(m, q=q, sigma=sigma, steps=steps, seed=1)
    ids = tuple(f"c{j}" for j in range(m))
    slots = CanarySlots("w", 0, (m,), tuple(range(m)))
    rng = np.random.default_rng(0)
    seen = []
    for coins in (inc, ~inc):  # two opposite coin draws, the same released noisy updates
        hooks = GradientCanaryHooks(ids, slots, scale=1.0)
        hooks.mechanism(Mechanism(q, sigma, 2.0))
        members = [cid for cid, c in zip(ids, coins, strict=True) if c]
        for t in range(steps):
            w = _P((m,), len(members), rng)
            hooks.on_per_sample_grads(step=t, params=[w], example_ids=members)
            w.grad = torch.as_tensor(x[:, t] * 2.0 / 4.0)  # B·g = x·C with B = 4, C = 2
            hooks.on_noisy_grads(step=t, params=[w], expected_batch_size=4.0)
        seen.append(hooks)
    a, b = seen
    assert not np.array_equal(a.appearances, b.appearances)  # the coins differed
    np.testing.assert_array_equal(a.scores(), b.scores())
    np.testing.assert_array_equal(a.scores("sum"), b.scores("sum"))
    np.testing.assert_allclose(a.scores(), _llr(x, q=q, sigma=sigma), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.scores("sum"), 2.0 * x.sum(axis=1), rtol=1e-9, atol=1e-9)
    with pytest.raises(DpauditError, match="statistic"):
        a.scores("mean")


class _P:
    """A stand-in parameter with Opacus' per-sample and summed gradients."""

    def __init__(self, shape, batch, rng):
        import torch

        self.shape = shape
        self.grad_sample = torch.as_tensor(rng.normal(size=(batch, *shape)), dtype=torch.float32)
        self.grad = None


def test_injection_replaces_canary_rows_only():
    import torch

    rng = np.random.default_rng(0)
    params = [_P((3, 2), 4, rng), _P((6, 5), 4, rng), _P((7,), 4, rng)]
    before = [p.grad_sample.clone() for p in params]
    slots = CanarySlots("w", 1, (6, 5), (10, 11, 29))
    hooks = GradientCanaryHooks(("c0", "c1", "c2"), slots, scale=2.0)
    hooks.mechanism(Mechanism(0.1, 1.0, 0.5))
    hooks.on_per_sample_grads(step=0, params=params, example_ids=["r0", "c2", "r1", "c0"])
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p.grad_sample[[0, 2]], b[[0, 2]])  # real rows untouched
    want = torch.zeros(2, 30)
    want[0, 29] = want[1, 10] = 1.0  # scale·C
    assert torch.equal(params[1].grad_sample[[1, 3]].reshape(2, -1), want)
    assert not params[0].grad_sample[[1, 3]].any() and not params[2].grad_sample[[1, 3]].any()
    assert hooks.appearances.tolist() == [1, 0, 1]
    # the noisy update: B·g along each coordinate accumulates
    params[1].grad = torch.arange(30, dtype=torch.float32).reshape(6, 5) / 4
    hooks.on_noisy_grads(step=0, params=params, expected_batch_size=4.0)
    hooks.on_noisy_grads(step=1, params=params, expected_batch_size=4.0)
    assert hooks.scores("sum").tolist() == [20.0, 22.0, 58.0] and hooks.steps_seen == 2
    # per step x = B·g/C = 20, 22, 58 (C = 0.5): log(0.9 + 0.1·exp((x - 1/2)/1))
    want = [2 * math.log(0.9 + 0.1 * math.exp(x - 0.5)) for x in (20.0, 22.0, 58.0)]
    np.testing.assert_allclose(hooks.scores(), want, rtol=1e-12)


def test_hook_refuses_wrong_parameter_and_bad_scale():
    rng = np.random.default_rng(0)
    hooks = GradientCanaryHooks(("c0",), CanarySlots("w", 0, (6, 5), (1,)))
    hooks.mechanism(Mechanism(0.1, 1.0, 1.0))
    with pytest.raises(DpauditError, match="should be w"):
        hooks.on_per_sample_grads(step=0, params=[_P((5, 6), 1, rng)], example_ids=["c0"])
    with pytest.raises(DpauditError, match="scale"):
        GradientCanaryHooks(("c0",), CanarySlots("w", 0, (6, 5), (1,)), scale=0.5)
    with pytest.raises(DpauditError, match="reserved"):
        GradientCanaryHooks(("c0", "c1"), CanarySlots("w", 0, (6, 5), (1,)))


def test_default_hooks_observe_nothing():
    assert not TrainHooks().wants_noisy_grads
    slots = CanarySlots("w", 0, (2,), (0,))
    assert GradientCanaryHooks(("c",), slots).wants_noisy_grads
    assert CombinedHooks(Correct(), GradientCanaryHooks(("c",), slots)).wants_noisy_grads
    assert not CombinedHooks(Correct()).wants_noisy_grads


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def setup():
    from dpaudit.datasets.synth import synthesize
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    records = synthesize("clinical", 40, 0)
    tok = train_bpe_tokenizer([r.text for r in records], vocab_size=300)
    return records, tok


def _config(**kw):
    kw.setdefault("delta", 1e-5)
    return TrainConfig(physical_batch_size=min(8, kw["batch_size"]), checkpoint_every=10_000, **kw)


def _slots(config, tok, m):
    from dpaudit.trainers import build_model

    model = build_model(config, tok, seed=0, max_length=MAX_LENGTH).model
    return position_canary_slots(model, max_length=MAX_LENGTH, m=m)


def test_position_slots_are_spare_position_rows(setup):
    from dpaudit.trainers import build_model

    _, tok = setup
    model = build_model(_config(batch_size=8), tok, seed=0, max_length=MAX_LENGTH).model
    slots = position_canary_slots(model, max_length=MAX_LENGTH, m=300)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert slots.param_name == "transformer.wpe.weight" == names[slots.param_index]
    width = slots.param_shape[1]
    assert slots.coordinates[0] == MAX_LENGTH * width and len(set(slots.coordinates)) == 300
    with pytest.raises(DpauditError, match="spare position rows"):
        position_canary_slots(model, max_length=MAX_LENGTH, m=10**6)
    head = build_model(_config(batch_size=8, mode="head"), tok, seed=0, max_length=MAX_LENGTH).model
    with pytest.raises(DpauditError, match="position embedding"):
        position_canary_slots(head, max_length=MAX_LENGTH, m=10)


def _run(setup, tmp_path, *, m, seed=0, variant=None, scale=3.0, **cfg):
    from dpaudit.trainers import train_model

    records, tok = setup
    canaries = plant_gradient_canaries(m, seed=seed)
    train = records + canaries.records()
    config = _config(**cfg)
    hooks = GradientCanaryHooks(canaries.ids, _slots(config, tok, m), scale=scale)
    result = train_model(
        train,
        config=config,
        tokenizer=tok,
        out_dir=tmp_path / f"run{seed}",
        seed=seed,
        max_length=MAX_LENGTH,
        progress=False,
        hooks=CombinedHooks(hooks, variant or Correct()),
    )
    return train, canaries, hooks, result


def _lot_counts(train, canaries, *, rate, steps, seed):
    """Times each canary was in a lot, from the sampler alone (independent of the hooks)."""
    from dpaudit.trainers.data import PoissonSampler

    where = {cid: j for j, cid in enumerate(canaries.ids)}
    counts = np.zeros(len(canaries))
    sampler = PoissonSampler(len(train), rate, seed)
    for t in range(steps):
        for i in sampler.lot(t):
            if train[i].id in where:
                counts[where[train[i].id]] += 1
    return counts


def test_statistic_is_exact_without_noise(setup, tmp_path):
    c = 0.5
    train, canaries, hooks, res = _run(
        setup, tmp_path, m=120, batch_size=12, epochs=1.5, noise_multiplier=0.0, max_grad_norm=c
    )
    assert hooks.steps_seen == res.steps > 0
    counts = _lot_counts(train, canaries, rate=res.ledger.sample_rate, steps=res.steps, seed=0)
    inc = np.asarray(canaries.included)
    assert counts[inc].sum() > 10 and np.array_equal(counts, hooks.appearances)
    np.testing.assert_allclose(hooks.scores("sum"), c * counts, rtol=1e-5, atol=1e-6)
    assert np.all(hooks.scores("sum")[~inc] == 0.0)
    # a claimed sigma of 0 makes the likelihood ratio degenerate: the sum stands in
    np.testing.assert_array_equal(hooks.scores(), hooks.scores("sum"))


def test_noise_on_canary_coordinates_has_the_dp_sgd_scale(setup, tmp_path):
    sigma, c = 1.3, 0.7
    _, canaries, hooks, res = _run(
        setup, tmp_path, m=400, batch_size=20, epochs=1.0, noise_multiplier=sigma, max_grad_norm=c
    )
    t = res.steps
    expected = sigma * c * math.sqrt(t)
    residual = hooks.scores("sum") - c * hooks.appearances  # clipped canary = C exactly (to 1e-6)
    assert abs(residual.mean()) < 4 * expected / math.sqrt(residual.size)
    assert residual.std() == pytest.approx(expected, rel=0.15)
    out = hooks.scores("sum")[~np.asarray(canaries.included)]
    assert out.std() == pytest.approx(expected, rel=0.25)


def test_misreported_rate_samples_faster_than_the_ledger_says(setup, tmp_path):
    train, canaries, hooks, res = _run(
        setup,
        tmp_path,
        m=80,
        batch_size=4,
        epochs=0.5,
        noise_multiplier=0.0,
        variant=MisreportedSamplingRate(5.0),
    )
    q = res.ledger.sample_rate
    assert q == pytest.approx(4 / len(train))
    counts = _lot_counts(train, canaries, rate=5 * q, steps=res.steps, seed=0)
    np.testing.assert_allclose(hooks.scores("sum"), counts, rtol=1e-5, atol=1e-6)


def test_no_clipping_lets_the_crafted_norm_through(setup, tmp_path):
    _, canaries, hooks, res = _run(
        setup,
        tmp_path,
        m=80,
        batch_size=12,
        epochs=1.0,
        scale=50.0,
        noise_multiplier=0.0,
        max_grad_norm=0.5,
        variant=NoClipping(),
    )
    assert res.ledger.max_grad_norm == 0.5  # the ledger states the claim
    np.testing.assert_allclose(hooks.scores("sum"), 25.0 * hooks.appearances, rtol=1e-5)


# One seed in the fast tests; the other two (a DP-SGD run each) with the slow ones.
@pytest.mark.parametrize(
    "seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
)
def test_bound_never_exceeds_the_ledger_on_correct_dp_sgd(setup, tmp_path, seed):
    from dpaudit.audit.verdict import judge

    _, canaries, hooks, res = _run(
        setup, tmp_path, m=300, seed=seed, batch_size=24, epochs=2.0, target_epsilon=1.0, scale=50.0
    )
    eps_ub = res.ledger.epsilons["pld"]
    assert eps_ub == pytest.approx(1.0, abs=0.01)
    for statistic in ("likelihood-ratio", "sum"):
        bounds = gradient_canary_audits(
            hooks.scores(statistic), canaries.included, delta=res.ledger.delta, confidence=0.95
        )
        for lower in bounds.values():
            if lower.guarantee == "lower-bound":  # q < 1 here: the GDP family does not apply
                assert lower.epsilon <= eps_ub
                assert judge(lower, res.ledger.epsilons, "pld").verdict == "consistent"


def test_full_batch_likelihood_ratio_is_the_gaussian_one(setup, tmp_path):
    # q = 1: every step draws every included canary; the log-LR is (sum/C - T/2)/sigma^2
    records, _ = setup
    n = len(records) + sum(plant_gradient_canaries(100, seed=0).included)
    c = 0.5
    _, canaries, hooks, res = _run(
        setup, tmp_path, m=100, batch_size=n, epochs=2.0, target_epsilon=2.0, max_grad_norm=c
    )
    led = res.ledger
    assert led.sample_rate == 1.0 and res.steps == 2
    want = (hooks.scores("sum") / c - res.steps / 2) / led.noise_multiplier**2
    np.testing.assert_allclose(hooks.scores(), want, rtol=1e-9, atol=1e-9)
    assert hooks.appearances.tolist() == [2 * int(i) for i in canaries.included]
